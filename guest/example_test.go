package guest_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cloisterhq/cloister/guest"
)

// A program reads its inputs from /input and writes its outputs to
// /output. Run natively (tests, benchmarks), the same code uses
// $CLOISTER_GUEST_ROOT/input and /output instead, as here.
func Example() {
	root, err := os.MkdirTemp("", "guest-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(root)
	os.MkdirAll(filepath.Join(root, "input"), 0o755)
	os.MkdirAll(filepath.Join(root, "output"), 0o755)
	os.WriteFile(filepath.Join(root, "input", "numbers.json"), []byte(`[3, 4, 5]`), 0o644)
	os.Setenv(guest.RootEnv, root)
	defer os.Unsetenv(guest.RootEnv)

	// The program itself:
	var xs []int
	if err := guest.ReadJSON("numbers.json", &xs); err != nil {
		guest.Fail("reading numbers.json: %v", err)
	}
	sum := 0
	for _, x := range xs {
		sum += x
	}
	if err := guest.WriteJSON("sum.json", map[string]int{"sum": sum}); err != nil {
		guest.Fail("writing sum.json: %v", err)
	}

	out, _ := os.ReadFile(filepath.Join(root, "output", "sum.json"))
	fmt.Printf("%s", out)
	// Output:
	// {
	//   "sum": 12
	// }
}
