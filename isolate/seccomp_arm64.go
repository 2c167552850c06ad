package isolate

import "golang.org/x/sys/unix"

const auditArch = unix.AUDIT_ARCH_AARCH64

const foreignSyscallBit = 0

// archSyscalls: arm64 has no fstat; Go calls fstatat(fd, "", AT_EMPTY_PATH).
var archSyscalls = []uintptr{unix.SYS_FSTATAT}
