// Command psi-sum computes a private set intersection sum: given one party's
// customer list and another party's purchase records, it reveals only how
// many customers made purchases and how much they spent in total — neither
// party learns the other's rows.
//
// Inputs (CSV, UTF-8, one record per line, "\n" or "\r\n" line ends, blank
// lines ignored, no quoting):
//
//	/input/customers.csv   id            optional header line "id"
//	/input/purchases.csv   id,amount     optional header line "id,amount"
//
// An id is 1 to 128 bytes after trimming surrounding spaces and tabs, and
// contains no comma or double quote. An amount is a base-10 integer in the
// smallest currency unit (cents), optionally negative (a refund); the total
// must fit in a signed 64-bit integer.
//
// Output, to /output/result.json and stdout:
//
//	{"intersection_size": N, "sum": S}
//
// N is the number of distinct customer ids that occur in purchases.csv; S
// is the total amount over every purchase row whose id is a customer
// (a customer with three purchases contributes all three amounts).
// Duplicate ids in customers.csv count once.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/cloisterhq/cloister/guest"
)

// Input and output names, part of the program's contract with the policy.
const (
	CustomersInput = "customers.csv"
	PurchasesInput = "purchases.csv"
	ResultOutput   = "result.json"
)

// MaxIDLen bounds one id in bytes.
const MaxIDLen = 128

// Result is the only thing the program reveals.
type Result struct {
	IntersectionSize int   `json:"intersection_size"`
	Sum              int64 `json:"sum"`
}

func main() {
	if err := run(); err != nil {
		guest.Fail("psi-sum: %v", err)
	}
}

func run() error {
	cf, err := guest.OpenInput(CustomersInput)
	if err != nil {
		return err
	}
	defer cf.Close()
	pf, err := guest.OpenInput(PurchasesInput)
	if err != nil {
		return err
	}
	defer pf.Close()
	res, err := Compute(cf, pf)
	if err != nil {
		return err
	}
	if err := guest.WriteJSON(ResultOutput, res); err != nil {
		return err
	}
	line, _ := json.Marshal(res)
	_, err = fmt.Printf("%s\n", line)
	return err
}

// Compute reads the two CSV inputs and returns the intersection size and
// sum. Errors name the input and line.
func Compute(customers, purchases io.Reader) (Result, error) {
	ids := make(map[string]bool) // customer id → seen in purchases
	err := eachRecord(customers, CustomersInput, "id", func(rec string) error {
		id, err := parseID(rec)
		if err != nil {
			return err
		}
		ids[id] = false
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	var res Result
	err = eachRecord(purchases, PurchasesInput, "id,amount", func(rec string) error {
		idField, amountField, ok := strings.Cut(rec, ",")
		if !ok {
			return errors.New(`want "id,amount"`)
		}
		id, err := parseID(idField)
		if err != nil {
			return err
		}
		amount, err := strconv.ParseInt(strings.TrimSpace(amountField), 10, 64)
		if err != nil {
			return fmt.Errorf("amount %q is not an integer (give amounts in cents)", amountField)
		}
		seen, isCustomer := ids[id]
		if !isCustomer {
			return nil
		}
		if !seen {
			ids[id] = true
			res.IntersectionSize++
		}
		if (amount > 0 && res.Sum > math.MaxInt64-amount) || (amount < 0 && res.Sum < math.MinInt64-amount) {
			return errors.New("sum overflows a signed 64-bit integer")
		}
		res.Sum += amount
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// eachRecord calls fn for every non-blank line of r except a first line
// equal (case-insensitively, spaces ignored) to header.
func eachRecord(r io.Reader, name, header string, fn func(rec string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	first := true
	for line := 1; sc.Scan(); line++ {
		rec := string(bytes.TrimSuffix(sc.Bytes(), []byte("\r")))
		if strings.TrimSpace(rec) == "" {
			continue
		}
		if first {
			first = false
			if strings.EqualFold(strings.ReplaceAll(rec, " ", ""), header) {
				continue
			}
		}
		if err := fn(rec); err != nil {
			return fmt.Errorf("input %q line %d: %w", name, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("input %q: %w", name, err)
	}
	return nil
}

func parseID(field string) (string, error) {
	id := strings.Trim(field, " \t")
	switch {
	case id == "":
		return "", errors.New("empty id")
	case len(id) > MaxIDLen:
		return "", fmt.Errorf("id of %d bytes, longer than %d", len(id), MaxIDLen)
	case strings.ContainsAny(id, ",\""):
		return "", fmt.Errorf("id %q contains a comma or a double quote", id)
	}
	return id, nil
}
