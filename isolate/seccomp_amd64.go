package isolate

import "golang.org/x/sys/unix"

const auditArch = unix.AUDIT_ARCH_X86_64

// foreignSyscallBit marks x32 system calls, which share the x86-64 audit
// arch; they are refused by killing the process.
const foreignSyscallBit = 0x40000000

// archSyscalls: new threads set their TLS base with arch_prctl.
var archSyscalls = []uintptr{unix.SYS_ARCH_PRCTL, unix.SYS_EPOLL_WAIT}
