// Command linreg fits y = slope·x + intercept by ordinary least squares to
// the points in /input/data.csv and reports the fit's coefficient of
// determination r².
//
// Input: one "x,y" pair of decimal numbers per line ("\n" or "\r\n", blank
// lines ignored); a first line whose fields are not both numbers is taken as
// a header and skipped. NaN and infinities are refused. At least two points
// with distinct x are needed.
//
// Output, to /output/linreg.json: {"n", "slope", "intercept", "r2"}; and a
// one-line summary on stdout. When every y is equal the line fits exactly
// and r2 is 1.
//
// The sums are accumulated in one streaming pass with Welford's updates
// (running means and co-moments), which stay accurate where the textbook
// Σx², Σxy formulas lose every digit to cancellation (e.g. x near 1e9).
//
//	cloister run --input data.csv=points.csv --output-dir out examples/linreg/linreg.wasm
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/cloisterhq/cloister/guest"
)

// DataInput is the input the program reads.
const DataInput = "data.csv"

// Fit is the program's output (linreg.json).
type Fit struct {
	N         int64   `json:"n"`
	Slope     float64 `json:"slope"`
	Intercept float64 `json:"intercept"`
	R2        float64 `json:"r2"`
}

func main() {
	if err := run(); err != nil {
		guest.Fail("linreg: %v", err)
	}
}

func run() error {
	f, err := guest.OpenInput(DataInput)
	if err != nil {
		return err
	}
	defer f.Close()
	fit, err := FitCSV(f)
	if err != nil {
		return fmt.Errorf("input %q: %w", DataInput, err)
	}
	if err := guest.WriteJSON("linreg.json", fit); err != nil {
		return err
	}
	_, err = fmt.Printf("y = %g·x + %g  (r² = %g, n = %d)\n", fit.Slope, fit.Intercept, fit.R2, fit.N)
	return err
}

// accumulator holds Welford's running statistics.
type accumulator struct {
	n            int64
	meanX, meanY float64
	sxx, syy     float64 // Σ(x-mean)²
	sxy          float64 // Σ(x-meanX)(y-meanY)
}

func (a *accumulator) add(x, y float64) {
	a.n++
	dx := x - a.meanX
	a.meanX += dx / float64(a.n)
	dy := y - a.meanY
	a.meanY += dy / float64(a.n)
	// (x - new meanX) times the deviation from the old mean keeps each
	// update exact to first order.
	a.sxx += dx * (x - a.meanX)
	a.syy += dy * (y - a.meanY)
	a.sxy += dx * (y - a.meanY)
}

func (a *accumulator) fit() (Fit, error) {
	if a.n < 2 {
		return Fit{}, fmt.Errorf("%d points; need at least 2", a.n)
	}
	if a.sxx == 0 {
		return Fit{}, errors.New("every x is equal: the line would be vertical")
	}
	slope := a.sxy / a.sxx
	f := Fit{N: a.n, Slope: slope, Intercept: a.meanY - slope*a.meanX, R2: 1}
	if a.syy != 0 {
		f.R2 = a.sxy * a.sxy / (a.sxx * a.syy)
	}
	if math.IsInf(f.Slope, 0) || math.IsInf(f.Intercept, 0) || math.IsNaN(f.R2) {
		return Fit{}, errors.New("values too large: the fit overflows float64")
	}
	return f, nil
}

// FitCSV reads "x,y" lines from r and returns the least-squares fit.
// Errors name the line.
func FitCSV(r io.Reader) (Fit, error) {
	var acc accumulator
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	first := true
	for line := 1; sc.Scan(); line++ {
		rec := string(bytes.TrimSuffix(sc.Bytes(), []byte("\r")))
		if strings.TrimSpace(rec) == "" {
			continue
		}
		x, y, err := parsePoint(rec)
		if err != nil {
			if first {
				first = false
				continue // header
			}
			return Fit{}, fmt.Errorf("line %d: %w", line, err)
		}
		first = false
		acc.add(x, y)
	}
	if err := sc.Err(); err != nil {
		return Fit{}, err
	}
	return acc.fit()
}

func parsePoint(rec string) (x, y float64, err error) {
	xs, ys, ok := strings.Cut(rec, ",")
	if !ok || strings.Contains(ys, ",") {
		return 0, 0, fmt.Errorf(`want "x,y", got %q`, rec)
	}
	if x, err = parseNumber(xs); err != nil {
		return 0, 0, err
	}
	if y, err = parseNumber(ys); err != nil {
		return 0, 0, err
	}
	return x, y, nil
}

func parseNumber(s string) (float64, error) {
	s = strings.TrimSpace(s)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is not a finite decimal number", s)
	}
	return v, nil
}
