// Package fedexample is the federated example's data and arithmetic,
// shared by the hospitals' sub-model (examples/hospital), the
// initiator's total model (examples/fedlogreg) and the checks of
// `cloister demo federation`: synthetic patient records, and logistic
// regression by Newton's method from sums each hospital computes over its
// own rows (gradient and Hessian), so that the federated fit and a
// centralised fit over the pooled rows do the same arithmetic.
package fedexample

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Columns of a hospital's patients.csv, after the id.
var Columns = []string{"age", "bmi", "systolic", "smoker", "outcome"}

// Features is the number of coefficients: an intercept and four features.
const Features = 5

// Patient is one row.
type Patient struct {
	ID                                  string
	Age, BMI, Systolic, Smoker, Outcome float64
}

// X is the row's feature vector, scaled to comparable ranges: 1 (the
// intercept), (age-50)/10, (bmi-27)/5, (systolic-130)/15, smoker.
func (p *Patient) X() [Features]float64 {
	return [Features]float64{1, (p.Age - 50) / 10, (p.BMI - 27) / 5, (p.Systolic - 130) / 15, p.Smoker}
}

// TrueWeights generate the outcomes.
var TrueWeights = [Features]float64{-1.2, 0.8, 0.5, 0.6, 0.9}

// Canary is the id of the row planted in hospital h's data: a value that
// must never leave the hospital's node.
func Canary(h string) string { return "CANARY-" + h + "-7f3e9c" }

// Generate makes n synthetic patients of hospital h from seed (each
// hospital its own seed and a slightly different population), the first
// one the canary row, as CSV with a header.
func Generate(h string, seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	var b bytes.Buffer
	b.WriteString("id,age,bmi,systolic,smoker,outcome\n")
	shift := float64(seed%3) * 2
	for i := 0; i < n; i++ {
		p := Patient{ID: fmt.Sprintf("%s-%05d", h, i),
			Age:      math.Round(clamp(r.NormFloat64()*12+50+shift, 18, 95)),
			BMI:      math.Round(clamp(r.NormFloat64()*4+27, 15, 50)*10) / 10,
			Systolic: math.Round(clamp(r.NormFloat64()*15+130+shift, 90, 210)),
		}
		if r.Float64() < 0.3 {
			p.Smoker = 1
		}
		x := p.X()
		z := 0.0
		for j := range x {
			z += TrueWeights[j] * x[j]
		}
		if r.Float64() < sigmoid(z) {
			p.Outcome = 1
		}
		if i == 0 {
			p.ID = Canary(h)
		}
		fmt.Fprintf(&b, "%s,%g,%g,%g,%g,%g\n", p.ID, p.Age, p.BMI, p.Systolic, p.Smoker, p.Outcome)
	}
	return b.Bytes()
}

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

// Parse reads patients.csv.
func Parse(r io.Reader) ([]Patient, error) {
	sc := bufio.NewScanner(r)
	var out []Patient
	line := 0
	for sc.Scan() {
		line++
		t := strings.TrimSpace(sc.Text())
		if t == "" || line == 1 && strings.HasPrefix(t, "id,") {
			continue
		}
		f := strings.Split(t, ",")
		if len(f) != 6 {
			return nil, fmt.Errorf("line %d: want 6 fields", line)
		}
		p := Patient{ID: f[0]}
		for i, dst := range []*float64{&p.Age, &p.BMI, &p.Systolic, &p.Smoker, &p.Outcome} {
			v, err := strconv.ParseFloat(f[i+1], 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("line %d: %s: not a number", line, Columns[i])
			}
			*dst = v
		}
		out = append(out, p)
	}
	return out, sc.Err()
}

// Value returns column c of p.
func (p *Patient) Value(c string) (float64, bool) {
	switch c {
	case "age":
		return p.Age, true
	case "bmi":
		return p.BMI, true
	case "systolic":
		return p.Systolic, true
	case "smoker":
		return p.Smoker, true
	case "outcome":
		return p.Outcome, true
	}
	return 0, false
}

// Sums are one party's gradient and Hessian of the log-likelihood at some
// weights, over N rows (the Hessian's upper triangle, row by row).
type Sums struct {
	Gradient []float64 `json:"gradient"`
	Hessian  []float64 `json:"hessian"`
	N        int       `json:"n"`
}

// Compute returns the sums over rows at w.
func Compute(rows []Patient, w []float64) (Sums, error) {
	if len(w) != Features {
		return Sums{}, fmt.Errorf("want %d weights", Features)
	}
	s := Sums{Gradient: make([]float64, Features), Hessian: make([]float64, Features*(Features+1)/2), N: len(rows)}
	for i := range rows {
		x := rows[i].X()
		z := 0.0
		for j := range x {
			z += w[j] * x[j]
		}
		p := sigmoid(z)
		k := 0
		for j := 0; j < Features; j++ {
			s.Gradient[j] += (rows[i].Outcome - p) * x[j]
			for l := j; l < Features; l++ {
				s.Hessian[k] += p * (1 - p) * x[j] * x[l]
				k++
			}
		}
	}
	return s, nil
}

// Add adds b to a.
func (a *Sums) Add(b Sums) error {
	if len(b.Gradient) != Features || len(b.Hessian) != Features*(Features+1)/2 {
		return errors.New("sums of the wrong size")
	}
	if a.Gradient == nil {
		a.Gradient, a.Hessian = make([]float64, Features), make([]float64, len(b.Hessian))
	}
	for i := range b.Gradient {
		a.Gradient[i] += b.Gradient[i]
	}
	for i := range b.Hessian {
		a.Hessian[i] += b.Hessian[i]
	}
	a.N += b.N
	return nil
}

// Step returns w after one Newton step with the pooled sums s: w + H⁻¹g.
func Step(w []float64, s Sums) ([]float64, error) {
	var a [Features][Features + 1]float64
	k := 0
	for j := 0; j < Features; j++ {
		for l := j; l < Features; l++ {
			a[j][l], a[l][j] = s.Hessian[k], s.Hessian[k]
			k++
		}
		a[j][Features] = s.Gradient[j]
	}
	// Gaussian elimination with partial pivoting.
	for c := 0; c < Features; c++ {
		p := c
		for r := c + 1; r < Features; r++ {
			if math.Abs(a[r][c]) > math.Abs(a[p][c]) {
				p = r
			}
		}
		if math.Abs(a[p][c]) < 1e-12 {
			return nil, errors.New("the Hessian is singular")
		}
		a[c], a[p] = a[p], a[c]
		for r := c + 1; r < Features; r++ {
			f := a[r][c] / a[c][c]
			for q := c; q <= Features; q++ {
				a[r][q] -= f * a[c][q]
			}
		}
	}
	d := make([]float64, Features)
	for r := Features - 1; r >= 0; r-- {
		v := a[r][Features]
		for q := r + 1; q < Features; q++ {
			v -= a[r][q] * d[q]
		}
		d[r] = v / a[r][r]
	}
	out := make([]float64, Features)
	for i := range w {
		out[i] = w[i] + d[i]
	}
	return out, nil
}

// Correct counts the rows w classifies right (probability ≥ 0.5 is 1).
func Correct(rows []Patient, w []float64) int {
	n := 0
	for i := range rows {
		x := rows[i].X()
		z := 0.0
		for j := range x {
			z += w[j] * x[j]
		}
		if (z >= 0) == (rows[i].Outcome == 1) {
			n++
		}
	}
	return n
}

// Fit is Newton's method from zero weights over rows, rounds steps.
func Fit(rows []Patient, rounds int) ([]float64, error) {
	w := make([]float64, Features)
	for i := 0; i < rounds; i++ {
		s, err := Compute(rows, w)
		if err != nil {
			return nil, err
		}
		if w, err = Step(w, s); err != nil {
			return nil, err
		}
	}
	return w, nil
}
