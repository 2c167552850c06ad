package isolate

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func frameBytes(t testing.TB, v wireMessage) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := writeFrame(&buf, v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestFrameRoundTrip: what the parent and the worker send comes back
// byte for byte, large buffers included, and a preloaded job carries no
// module.
func TestFrameRoundTrip(t *testing.T) {
	jb, rep, err := resolve(&Config{Module: wasmExit(3), Args: []string{"a"}, Env: []string{"K=V"}, Deterministic: true,
		Inputs: []Input{{Name: "b", Data: bytes.Repeat([]byte{7}, 100000)}, {Name: "a", Data: []byte("x")}, {Name: "empty", Data: nil}}})
	if err != nil || rep != nil {
		t.Fatal(err, rep)
	}
	jb.Seed[5] = 9
	var in workerInput
	if err := readFrame(bytes.NewReader(frameBytes(t, &workerInput{Job: jb})), 1<<30, &in); err != nil {
		t.Fatal(err)
	}
	got := in.Job
	if got == nil || !bytes.Equal(got.Module, jb.Module) || got.ModuleSHA256 != jb.ModuleSHA256 || got.Seed != jb.Seed ||
		!reflect.DeepEqual(got.Args, jb.Args) || !reflect.DeepEqual(got.Env, jb.Env) || got.Timeout != jb.Timeout ||
		!reflect.DeepEqual(got.InputNames, []string{"b", "a", "empty"}) {
		t.Fatalf("job changed on the wire: %+v", got)
	}

	c := *jb
	c.Module = nil
	in = workerInput{}
	if err := readFrame(bytes.NewReader(frameBytes(t, &workerInput{Job: &c})), 1<<30, &in); err != nil || in.Job.Module != nil {
		t.Fatalf("preloaded job: %v, module %d bytes", err, len(in.Job.Module))
	}
	in = workerInput{}
	if err := readFrame(bytes.NewReader(frameBytes(t, &workerInput{Preload: jb.Module})), 1<<30, &in); err != nil || in.Job != nil || !bytes.Equal(in.Preload, jb.Module) {
		t.Fatalf("preload frame: %v %+v", err, in)
	}

	res := &Result{Report: Report{Outcome: OutcomeExited, ExitCode: 3, OutputLimitsHit: []string{LimitMaxOutput}, Missing: map[string]string{"cgroup": "no"}},
		Stdout: []byte("out"), Stderr: bytes.Repeat([]byte("e"), 70000),
		layouts: []outputLayout{{name: "r.json", size: 2, blocks: []uint32{3}}, {name: "z"}, {name: "big", size: 3 * 4096, blocks: []uint32{4, 5, 0}}}}
	wr := newWireResult(res)
	wr.Probes = map[string]string{"open": "operation not permitted"}
	var back wireResult
	if err := readFrame(bytes.NewReader(frameBytes(t, &wr)), 1<<30, &back); err != nil {
		t.Fatal(err)
	}
	r2, err := back.result(&job{MaxOutput: 1 << 20, MaxOutputFiles: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r2.Report, res.Report) || !bytes.Equal(r2.Stdout, res.Stdout) || !bytes.Equal(r2.Stderr, res.Stderr) ||
		!reflect.DeepEqual(r2.layouts, []outputLayout{{name: "r.json", size: 2, blocks: []uint32{3}}, {name: "z", blocks: []uint32{}}, {name: "big", size: 3 * 4096, blocks: []uint32{4, 5, 0}}}) ||
		back.Probes["open"] != "operation not permitted" {
		t.Fatalf("result changed on the wire: %+v", r2)
	}
}

// TestResultLayoutsChecked: a worker's description of where the outputs
// lie in the area is checked against the job before anything is read:
// blocks outside the area, shared by two outputs, too few or too many for
// a size, sizes beyond the budget.
func TestResultLayoutsChecked(t *testing.T) {
	jb := &job{MaxOutput: 3 * 4096, MaxOutputFiles: 2} // an area of 3+2 blocks
	for name, tc := range map[string]struct {
		layouts []outputLayout
		want    string
	}{
		"outside":        {[]outputLayout{{name: "a", size: 1, blocks: []uint32{5}}}, "outside"},
		"shared":         {[]outputLayout{{name: "a", size: 1, blocks: []uint32{1}}, {name: "b", size: 1, blocks: []uint32{1}}}, "two files"},
		"too few":        {[]outputLayout{{name: "a", size: 4097, blocks: []uint32{1}}}, "needs 2"},
		"too many":       {[]outputLayout{{name: "a", size: 1, blocks: []uint32{1, 2}}}, "beyond"},
		"budget":         {[]outputLayout{{name: "a", size: 3 * 4096, blocks: []uint32{0, 1, 2}}, {name: "b", size: 1, blocks: []uint32{3}}}, "allowed in all"},
		"negative":       {[]outputLayout{{name: "a", size: -1}}, "allowed in all"},
		"bad name":       {[]outputLayout{{name: "../a", size: 1, blocks: []uint32{0}}}, "output name"},
		"twice":          {[]outputLayout{{name: "a"}, {name: "a"}}, "twice"},
		"too many files": {[]outputLayout{{name: "a"}, {name: "b"}, {name: "c"}}, "more than the 2"},
	} {
		wr := newWireResult(&Result{layouts: tc.layouts})
		var back wireResult
		if err := readFrame(bytes.NewReader(frameBytes(t, &wr)), 1<<20, &back); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := back.result(jb); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

// TestFrameRefusals: frames a compromised worker could send are refused
// with an error, not a panic or a half-filled result.
func TestFrameRefusals(t *testing.T) {
	gw := newWireResult(&Result{Stdout: []byte("x"), layouts: []outputLayout{{name: "a", size: 1, blocks: []uint32{0}}}})
	good := frameBytes(t, &gw)
	body := good[8:]
	frame := func(b []byte) []byte {
		return append(binary.BigEndian.AppendUint64(nil, uint64(len(b))), b...)
	}
	h := binary.BigEndian.Uint32(body)
	for name, tc := range map[string]struct {
		frame []byte
		max   int64
		want  string
	}{
		"over the bound":      {good, int64(len(body) - 1), "exceeds"},
		"truncated":           {good[:len(good)-1], 1 << 20, "EOF"},
		"no header":           {frame([]byte{0, 0}), 1 << 20, "shorter than its header"},
		"header too long":     {frame(append([]byte{0xff, 0, 0, 0}, body[4:]...)), 1 << 20, "header in"},
		"json header":         {frame(append(binary.BigEndian.AppendUint32(nil, 3), "{x}"...)), 1 << 20, "another build"},
		"header cut short":    {frame(append(binary.BigEndian.AppendUint32(nil, 2), kindResult, 9)), 1 << 20, "string in"},
		"missing output blob": {frame(body[:len(body)-10]), 1 << 20, "byte strings for 1 outputs"},
		"extra blob":          {frame(append(append([]byte{}, body...), 0, 0, 0, 0, 0, 0, 0, 0)), 1 << 20, "byte strings for 1 outputs"},
		"blob too long":       {frame(append(append([]byte{}, body[:4+h]...), 0xff, 0, 0, 0, 0, 0, 0, 0)), 1 << 20, "-byte string in"},
		"truncated blob len":  {frame(append(append([]byte{}, body[:4+h]...), 0, 0)), 1 << 20, "truncated byte string length"},
	} {
		var wr wireResult
		err := readFrame(bytes.NewReader(tc.frame), tc.max, &wr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one saying %q", name, err, tc.want)
		}
	}
	var m lockedMsg
	if err := readFrame(bytes.NewReader(frameBytes(t, &lockedMsg{Applied: []string{"x"}})), 1<<20, &m); err != nil || m.Applied[0] != "x" {
		t.Errorf("locked message: %v %+v", err, m)
	}
}

// FuzzReadFrame: the parent decodes what a possibly compromised worker
// writes. Any bytes must give a result or an error, never a panic, and a
// result whose outputs have as many names as byte strings.
func FuzzReadFrame(f *testing.F) {
	fw := newWireResult(&Result{Report: Report{Outcome: OutcomeExited}, Stdout: []byte("x"), layouts: []outputLayout{{name: "a", size: 1, blocks: []uint32{0}}}})
	f.Add(frameBytes(f, &fw))
	f.Add(frameBytes(f, &lockedMsg{Applied: []string{"seccomp"}, Missing: map[string]string{"cgroup": "no"}}))
	jb, _, _ := resolve(&Config{Module: wasmEmpty, Inputs: []Input{{Name: "a", Data: []byte("1")}}})
	f.Add(frameBytes(f, &workerInput{Job: jb}))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var wr wireResult
		if err := readFrame(bytes.NewReader(b), 1<<20, &wr); err == nil {
			r, err := wr.result(&job{MaxOutput: 1 << 20, MaxOutputFiles: 16})
			if err == nil && len(r.layouts) != len(wr.OutputNames) {
				t.Fatalf("%d outputs for %d names", len(r.layouts), len(wr.OutputNames))
			}
		}
		var in workerInput
		_ = readFrame(bytes.NewReader(b), 1<<20, &in)
		var m lockedMsg
		_ = readFrame(bytes.NewReader(b), 1<<20, &m)
	})
}

// fillEvery sets every exported field reachable from v to a distinct
// non-zero value (lists and maps of two), so that a field the codec leaves
// out comes back different.
func fillEvery(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", *n))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(-1000 * *n))
	case reflect.Uint64:
		v.SetUint(uint64(1<<40 + *n))
	case reflect.Uint32:
		v.SetUint(uint64(1<<20 + *n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			v.Index(i).Set(reflect.ValueOf(byte(*n + i)))
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte(fmt.Sprintf("b%d", *n)))
			return
		}
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := 0; i < 2; i++ {
			fillEvery(s.Index(i), n)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for i := 0; i < 2; i++ {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fillEvery(k, n)
			fillEvery(e, n)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fillEvery(p.Elem(), n)
		v.Set(p)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fillEvery(v.Field(i), n)
			}
		}
	default:
		panic("fillEvery: " + v.Kind().String())
	}
}

// TestWireEveryField: every field of every message survives the trip, and
// nil lists and maps stay nil while empty ones stay empty.
func TestWireEveryField(t *testing.T) {
	n := 0
	var ready readyMsg
	fillEvery(reflect.ValueOf(&ready).Elem(), &n)
	var locked lockedMsg
	fillEvery(reflect.ValueOf(&locked).Elem(), &n)
	var in workerInput
	fillEvery(reflect.ValueOf(&in).Elem(), &n)
	in.Preload = nil
	var wr wireResult
	fillEvery(reflect.ValueOf(&wr).Elem(), &n)
	wr.stdout, wr.stderr, wr.layouts = []byte("o"), []byte("e"), [][]byte{[]byte("1"), nil}
	// The run's CPU time is the host's measurement of the worker, never
	// the worker's word: the wire does not carry it.
	wr.Report.CPUMS = nil
	empty := wireResult{Report: Report{Outputs: []OutputInfo{}, Protections: []string{}, Missing: map[string]string{}}}
	var call callMsg
	fillEvery(reflect.ValueOf(&call).Elem(), &n)
	call.req = []byte("request")
	var reply replyMsg
	fillEvery(reflect.ValueOf(&reply).Elem(), &n)
	reply.resp = []byte("response")
	secret := secretMsg{Names: []string{"module", "input/a"}, keys: [][]byte{[]byte("k1"), []byte("k2")}}
	for _, m := range []wireMessage{&ready, &locked, &in, &wr, &empty, &readyMsg{}, &call, &reply, &secret} {
		back := reflect.New(reflect.TypeOf(m).Elem()).Interface().(wireMessage)
		if err := readFrame(bytes.NewReader(frameBytes(t, m)), 1<<20, back); err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if w, ok := back.(*wireResult); ok {
			// Blobs alias the frame (an empty one is not nil): compare
			// their bytes, then the rest.
			want := m.(*wireResult)
			same := bytes.Equal(w.stdout, want.stdout) && bytes.Equal(w.stderr, want.stderr) && len(w.layouts) == len(want.layouts)
			for i := 0; same && i < len(w.layouts); i++ {
				same = bytes.Equal(w.layouts[i], want.layouts[i])
			}
			if !same {
				t.Errorf("blobs changed on the wire: %q %q %q", w.stdout, w.stderr, w.layouts)
			}
			w.stdout, w.stderr, w.layouts = want.stdout, want.stderr, want.layouts
		}
		switch b := back.(type) {
		case *callMsg:
			if !bytes.Equal(b.req, call.req) {
				t.Errorf("request changed on the wire: %q", b.req)
			}
			b.req = call.req
		case *replyMsg:
			if !bytes.Equal(b.resp, reply.resp) {
				t.Errorf("response changed on the wire: %q", b.resp)
			}
			b.resp = reply.resp
		case *secretMsg:
			if len(b.keys) != 2 || string(b.keys[0]) != "k1" || string(b.keys[1]) != "k2" {
				t.Errorf("keys changed on the wire: %q", b.keys)
			}
			b.keys = secret.keys
		}
		if !reflect.DeepEqual(back, m) {
			t.Errorf("%T changed on the wire:\n got %+v\nwant %+v", m, back, m)
		}
	}
}

// TestWorkerProtocolIDIsCurrent: the identifier a worker sends changes
// with the features and the message types it describes.
func TestWorkerProtocolIDIsCurrent(t *testing.T) {
	if got := describeProtocol(); got != workerProtocolID {
		t.Fatalf("the worker features or message types changed: set workerProtocolID to %q", got)
	}
}

// TestWireHeaderBounds: a header cannot make the parent allocate far more
// than its own size: headers over maxWireHeader and counts over
// maxWireCount are refused before anything is allocated.
func TestWireHeaderBounds(t *testing.T) {
	big := append([]byte{kindLocked}, appendUint(nil, 1<<20)...)
	big = append(big, make([]byte, 1<<20)...)
	if err := decodeHeader(big, &lockedMsg{}); err == nil || !strings.Contains(err.Error(), "bound") {
		t.Errorf("a header over the bound: %v", err)
	}
	many := append([]byte{kindLocked}, appendUint(nil, maxWireCount+2)...)
	many = append(many, make([]byte, maxWireCount+8)...)
	if err := decodeHeader(many, &lockedMsg{}); err == nil || !strings.Contains(err.Error(), "list of") {
		t.Errorf("a count over maxWireCount: %v", err)
	}
}
