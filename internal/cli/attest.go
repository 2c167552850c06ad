package cli

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	_ "github.com/cloisterhq/cloister/attest/all"
	"github.com/cloisterhq/cloister/attest/ear"
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/attest/tpm"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/keys"
)

func newAttestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "attest",
		Short: "Produce and verify remote-attestation evidence",
		Long: `attest produces evidence for this machine (software platform key, TPM 2.0)
and verifies evidence of any supported class offline: software, tpm,
sev-snp, tdx, sgx, nitro, cca, RA-TLS certificates and EAR attestation
results. See docs/attestation.md for what each class proves.`,
		Example: `  cloister attest quote --class software --report-data 00ff --out ev.json --pub-out platform.pub
  cloister attest verify ev.json --trust-root platform.pub --report-data 00ff
  cloister attest verify nitro.cbor --at 2024-09-07T14:37:39Z --json`,
	}
	cmd.AddCommand(newAttestVerifyCmd(), newAttestQuoteCmd())
	return cmd
}

type verifyFlags struct {
	class        string
	collateral   []string
	trustRoots   []string
	replaceRoots bool
	at           string
	nonce        string
	reportData   string
	allowDebug   bool
	json         bool
	earOut       string
	earKey       string
}

func newAttestVerifyCmd() *cobra.Command {
	f := &verifyFlags{}
	cmd := &cobra.Command{
		Use:   "verify FILE",
		Short: "Verify attestation evidence offline and print its claims",
		Long: `verify checks the signatures and certificate chains of the evidence in FILE
as of --at (default now), then the equality checks asked for, and prints the
verified claims. FILE may be binary, base64 or PEM; "-" reads standard input.
With --class auto (the default) the format is recognised from its framing.

Trust anchors: every class that chains to a vendor root (sev-snp: AMD ARK
Milan/Genoa; sgx, tdx: Intel SGX Root CA; nitro: AWS Nitro Enclaves Root G1)
uses the roots built into cloister. Each --trust-root FILE adds to them:
PEM or DER certificates become additional roots; PEM public keys, JWKs and
"ed25519:<base64>" lines become pinned keys (software platform keys, TPM
attestation keys, EAR verifier keys, CCA platform keys). --replace-roots
makes the --trust-root certificates the only roots.

Debug-mode isolates are refused unless --allow-debug is given.

--ear-out FILE --ear-key KEY additionally writes, when verification
succeeds, an EAR attestation result (a JWT, profile
tag:github.com,2023:veraison/ear) signed with KEY, so that parties who
trust this verifier's key can rely on the result without verifying the
evidence themselves.

Exit status: 0 verified; 1 verification failed (reason on stderr; with
--json {"verified": false, "error": "..."} on stdout); 2 unreadable input,
unknown format or bad usage.`,
		Example: `  cloister attest verify report.bin --collateral vcek.der --report-data 0102030405
  cloister attest verify nitro_attestation.b64 --at 2024-09-07T14:37:39.545Z
  cloister attest verify token.jwt --class ear --trust-root verifier.jwk.json --json
  cloister attest verify ev.json --trust-root platform.pub
  cloister attest verify doc.cbor --ear-key verifier.pem --ear-out result.jwt`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAttestVerify(cmd, f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.class, "class", "auto", "evidence class: auto|software|tpm|sev-snp|tdx|sgx|nitro|ra-tls|ear|cca")
	fl.StringArrayVar(&f.collateral, "collateral", nil, "endorsement file the format needs (certificates, CRLs, collateral JSON, event log); repeatable")
	fl.StringArrayVar(&f.trustRoots, "trust-root", nil, "PEM/DER root certificates, or PEM/JWK/ed25519: public keys to pin; repeatable")
	fl.BoolVar(&f.replaceRoots, "replace-roots", false, "use only the --trust-root certificates as roots, not the built-in ones")
	fl.StringVar(&f.at, "at", "", "verify as of this RFC 3339 time (default now)")
	fl.StringVar(&f.nonce, "nonce", "", "required nonce (hex)")
	fl.StringVar(&f.reportData, "report-data", "", "required report data (hex; a shorter value must match the prefix, the rest zero)")
	fl.BoolVar(&f.allowDebug, "allow-debug", false, "accept evidence from debug-enabled isolates")
	fl.BoolVar(&f.json, "json", false, "print the claims as JSON")
	fl.StringVar(&f.earOut, "ear-out", "", "after verifying, write an EAR attestation result (JWT) here, signed with --ear-key")
	fl.StringVar(&f.earKey, "ear-key", "", "verifier signing key for --ear-out (PEM PKCS#8/EC, or a private JWK; P-256, P-384 or Ed25519)")
	return cmd
}

// claimsJSON is the --json output of a successful verification.
type claimsJSON struct {
	Class             attest.Class      `json:"class"`
	Verified          bool              `json:"verified"`
	Format            string            `json:"format"`
	Measurement       string            `json:"measurement"`
	Measurements      map[string]string `json:"measurements,omitempty"`
	ReportData        string            `json:"report_data"`
	Nonce             string            `json:"nonce,omitempty"`
	PublicKey         string            `json:"public_key,omitempty"`
	HardwareProtected bool              `json:"hardware_protected"`
	Debug             bool              `json:"debug"`
	TCBStatus         string            `json:"tcb_status"`
	Advisories        []string          `json:"advisories"`
	SVN               map[string]uint64 `json:"svn,omitempty"`
	IssuedAt          string            `json:"issued_at,omitempty"`
	Signer            string            `json:"signer,omitempty"`
	Warnings          []string          `json:"warnings"`
	Extra             map[string]any    `json:"extra,omitempty"`
}

func toClaimsJSON(c *attest.Claims) claimsJSON {
	out := claimsJSON{
		Class:             c.Class,
		Verified:          true,
		Format:            c.Format,
		Measurement:       hex.EncodeToString(c.Measurement),
		ReportData:        hex.EncodeToString(c.ReportData),
		Nonce:             hex.EncodeToString(c.Nonce),
		PublicKey:         hex.EncodeToString(c.PublicKey),
		HardwareProtected: c.HardwareProtected,
		Debug:             c.Debug,
		TCBStatus:         c.TCBStatus,
		Advisories:        c.Advisories,
		SVN:               c.SVN,
		Signer:            c.Signer,
		Warnings:          c.Warnings,
		Extra:             c.Extra,
	}
	if out.Advisories == nil {
		out.Advisories = []string{}
	}
	if out.Warnings == nil {
		out.Warnings = []string{}
	}
	if len(c.Measurements) > 0 {
		out.Measurements = make(map[string]string, len(c.Measurements))
		for k, v := range c.Measurements {
			out.Measurements[k] = hex.EncodeToString(v)
		}
	}
	if !c.IssuedAt.IsZero() {
		out.IssuedAt = c.IssuedAt.UTC().Format(time.RFC3339Nano)
	}
	return out
}

func runAttestVerify(cmd *cobra.Command, f *verifyFlags, file string) error {
	stdout := cmd.OutOrStdout()
	fail := func(code int, err error) error {
		if f.json {
			b, _ := json.Marshal(failedJSON{Verified: false, Error: err.Error()})
			fmt.Fprintln(stdout, string(b))
		}
		return &ExitError{Code: code, Err: err}
	}
	usage := func(format string, args ...any) error { return fail(ExitUsage, fmt.Errorf(format, args...)) }

	var opts attest.VerifyOptions
	if f.at != "" {
		t, err := time.Parse(time.RFC3339Nano, f.at)
		if err != nil {
			return usage("--at %q is not an RFC 3339 time: %v", f.at, err)
		}
		opts.Now = t
	}
	var ref attest.ReferenceValues
	if f.nonce != "" {
		b, err := hex.DecodeString(f.nonce)
		if err != nil {
			return usage("--nonce is not hex: %v", err)
		}
		ref.Nonce = b
	}
	if f.reportData != "" {
		b, err := hex.DecodeString(f.reportData)
		if err != nil {
			return usage("--report-data is not hex: %v", err)
		}
		if len(b) > attest.ReportDataSize {
			return usage("--report-data is %d bytes, at most %d", len(b), attest.ReportDataSize)
		}
		ref.ReportData = b
	}
	opts.AllowDebug, ref.AllowDebug = f.allowDebug, f.allowDebug
	opts.ReplaceRoots = f.replaceRoots
	for _, p := range f.trustRoots {
		data, err := os.ReadFile(p)
		if err != nil {
			return usage("--trust-root: %v", err)
		}
		ta, err := attest.ParseTrustAnchors(p, data)
		if err != nil {
			return usage("--trust-root %v", err)
		}
		opts.Roots = append(opts.Roots, ta.Roots...)
		opts.TrustedKeys = append(opts.TrustedKeys, ta.Keys...)
	}
	if f.replaceRoots && len(opts.Roots) == 0 {
		return usage("--replace-roots needs at least one --trust-root certificate")
	}
	var earSigner crypto.Signer
	if (f.earOut == "") != (f.earKey == "") {
		return usage("--ear-out and --ear-key go together")
	}
	if f.earKey != "" {
		b, err := os.ReadFile(f.earKey)
		if err != nil {
			return usage("--ear-key: %v", err)
		}
		if earSigner, err = ear.ParseSigningKey(b); err != nil {
			return usage("--ear-key %s: %v", f.earKey, err)
		}
	}

	raw, err := readInput(cmd, file)
	if err != nil {
		return usage("%v", err)
	}
	data, err := attest.DecodeInput(raw)
	if err != nil {
		return usage("%s: %v", file, err)
	}
	ev := &attest.Evidence{Data: data}
	if f.class == "auto" || f.class == "" {
		c, err := attest.Detect(data)
		if err != nil {
			return usage("%s: %v; name the format with --class", file, err)
		}
		ev.Class = c
	} else {
		ev.Class = attest.Class(f.class)
	}
	if _, err := attest.VerifierFor(ev.Class); err != nil {
		return usage("--class: %v", err)
	}
	for _, p := range f.collateral {
		b, err := os.ReadFile(p)
		if err != nil {
			return usage("--collateral: %v", err)
		}
		ev.Collateral = append(ev.Collateral, b)
	}

	claims, err := attest.Verify(cmd.Context(), ev, opts)
	if err == nil {
		err = attest.Validate(claims, ref, opts.Time())
	}
	if err != nil {
		if errors.Is(err, attest.ErrUnknownClass) {
			return fail(ExitUsage, fmt.Errorf("%s: %w", file, err))
		}
		if errors.Is(err, attest.ErrUntrustedSigner) && len(f.trustRoots) == 0 {
			what := "a file with the platform's ed25519:… key on a line of its own"
			switch ev.Class {
			case attest.ClassTPM:
				what = "a PEM file of the TPM's attestation key"
			case attest.ClassEAR, attest.ClassCCA:
				what = "the verifier's or platform's public key, PEM or JWK"
			}
			err = fmt.Errorf("%w; pin the key you expect with --trust-root FILE (the --pub-out file of 'cloister attest quote', or %s)", err, what)
		}
		return fail(ExitFailure, fmt.Errorf("%s: %s evidence not verified: %w", file, ev.Class, err))
	}
	if earSigner != nil {
		now := opts.Time()
		res := &ear.Result{
			VerifierID: ear.VerifierID{Build: "cloister attest verify", Developer: "cloister"},
			Submods:    map[string]ear.Submod{string(claims.Class): ear.AppraiseClaims(claims, nil, false)},
		}
		if ref.Nonce != nil {
			res.Nonce = ear.NonceString(ref.Nonce)
		}
		tok, err := ear.Issue(res, earSigner, now)
		if err != nil {
			return fail(ExitFailure, err)
		}
		if err := atomicfile.WriteFile(f.earOut, []byte(tok+"\n"), 0o644); err != nil {
			return fail(ExitFailure, fmt.Errorf("--ear-out: %w", err))
		}
	}
	cj := toClaimsJSON(claims)
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(cj)
	}
	printClaims(stdout, cj)
	return nil
}

func printClaims(w io.Writer, c claimsJSON) {
	fmt.Fprintf(w, "verified: %s evidence (%s)\n", c.Class, c.Format)
	fmt.Fprintf(w, "  measurement:        %s\n", c.Measurement)
	fmt.Fprintf(w, "  report data:        %s\n", c.ReportData)
	if c.Nonce != "" {
		fmt.Fprintf(w, "  nonce:              %s\n", c.Nonce)
	}
	if c.PublicKey != "" {
		fmt.Fprintf(w, "  public key:         %s\n", c.PublicKey)
	}
	fmt.Fprintf(w, "  hardware protected: %v\n", c.HardwareProtected)
	fmt.Fprintf(w, "  debug:              %v\n", c.Debug)
	if c.TCBStatus != "" {
		fmt.Fprintf(w, "  tcb status:         %s\n", c.TCBStatus)
	}
	if len(c.Advisories) > 0 {
		fmt.Fprintf(w, "  advisories:         %s\n", strings.Join(c.Advisories, ", "))
	}
	if c.IssuedAt != "" {
		fmt.Fprintf(w, "  issued at:          %s\n", c.IssuedAt)
	}
	if c.Signer != "" {
		fmt.Fprintf(w, "  signer:             %s\n", c.Signer)
	}
	names := make([]string, 0, len(c.Measurements))
	for k := range c.Measurements {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(w, "  %-19s %s\n", k+":", c.Measurements[k])
	}
	for _, warn := range c.Warnings {
		fmt.Fprintf(w, "  WARNING: %s\n", warn)
	}
}

func readInput(cmd *cobra.Command, file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(io.LimitReader(cmd.InOrStdin(), 64<<20))
	}
	return os.ReadFile(file)
}

type quoteFlags struct {
	class      string
	reportData string
	out        string
	pubOut     string
	key        string
	dataDir    string
	tpm        string
	eventLog   string
}

func newAttestQuoteCmd() *cobra.Command {
	f := &quoteFlags{}
	cmd := &cobra.Command{
		Use:   "quote",
		Short: "Produce evidence for this machine over the given report data",
		Long: `quote produces evidence of class software (signed by the node's Ed25519
platform key) or tpm (a TPM 2.0 quote by an attestation key, with the
cloister binary measured into PCR 23) binding --report-data (hex, at most 64
bytes; shorter values are padded with zeros).

The evidence is written to --out (default standard output) in the format
"cloister attest verify" reads. --pub-out writes the key a verifier must pin:
the platform key as "ed25519:<base64>", or the TPM attestation key as PEM.

software: the key comes from --key FILE or DATA_DIR/platform.key (a cloister
key file as written by "cloister key new" and the node, or a PEM "PRIVATE
KEY" holding a PKCS#8 Ed25519 key). Software evidence proves nothing against
the operator of this machine.
tpm: --tpm names the TPM: a device path (/dev/tpmrm0) or tcp:HOST:PORT for a
swtpm server (its control channel on PORT+1). For a device, the firmware's
event log is included when readable, so verifiers can see what was measured
into PCRs 0-7; the quote is refused if the log does not replay.`,
		Example: `  cloister attest quote --class software --key platform.key --report-data 00ff --out ev.json --pub-out platform.pub
  cloister attest quote --class tpm --tpm tcp:127.0.0.1:2321 --report-data 00ff --out tpm.json --pub-out ak.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAttestQuote(cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.class, "class", "", "evidence class: software|tpm (required)")
	fl.StringVar(&f.reportData, "report-data", "", "report data to bind (hex, at most 64 bytes; required)")
	fl.StringVar(&f.out, "out", "", "write the evidence here (default standard output)")
	fl.StringVar(&f.pubOut, "pub-out", "", "write the public key a verifier must pin here")
	fl.StringVar(&f.key, "key", "", "software: platform key file (default DATA_DIR/platform.key)")
	fl.StringVar(&f.dataDir, "data-dir", defaultDataDir(), "node data directory (env CLOISTER_DATA_DIR)")
	fl.StringVar(&f.tpm, "tpm", "/dev/tpmrm0", "tpm: device path or tcp:HOST:PORT of a swtpm server")
	fl.StringVar(&f.eventLog, "event-log", "", "tpm: TCG event log to include (default for a device: "+tpm.DefaultEventLogPath+" when readable; \"none\" to omit)")
	return cmd
}

func defaultDataDir() string {
	if d := os.Getenv("CLOISTER_DATA_DIR"); d != "" {
		return d
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cloister")
	}
	return ".cloister"
}

func runAttestQuote(cmd *cobra.Command, f *quoteFlags) error {
	if f.reportData == "" {
		return usageError("--report-data is required")
	}
	b, err := hex.DecodeString(f.reportData)
	if err != nil {
		return usageError("--report-data is not hex: %v", err)
	}
	if len(b) > attest.ReportDataSize {
		return usageError("--report-data is %d bytes, at most %d", len(b), attest.ReportDataSize)
	}
	var rd [attest.ReportDataSize]byte
	copy(rd[:], b)

	var (
		att attest.Attester
		pub []byte
	)
	switch attest.Class(f.class) {
	case attest.ClassSoftware:
		path := f.key
		if path == "" {
			path = filepath.Join(f.dataDir, "platform.key")
		}
		priv, err := readEd25519PrivateKey(path)
		if err != nil {
			return usageError("%v", err)
		}
		a, err := software.NewAttester(priv)
		if err != nil {
			return failure(err)
		}
		att, pub = a, []byte(protocol.FormatEd25519Key(a.PublicKey())+"\n")
	case attest.ClassTPM:
		rwc, err := tpm.Open(f.tpm)
		if err != nil {
			return failure(err)
		}
		defer rwc.Close()
		var topts []tpm.Option
		logPath := f.eventLog
		if logPath == "" && !strings.HasPrefix(f.tpm, "tcp:") {
			if _, err := os.Stat(tpm.DefaultEventLogPath); err == nil {
				logPath = tpm.DefaultEventLogPath
			}
		}
		if logPath != "" && logPath != "none" {
			log, err := os.ReadFile(logPath)
			if err != nil {
				return usageError("--event-log: %v", err)
			}
			topts = append(topts, tpm.WithEventLog(log))
		}
		a, err := tpm.NewAttester(rwc, topts...)
		if err != nil {
			return failure(err)
		}
		defer a.Close()
		att = a
		if pub, err = a.PublicKeyPEM(); err != nil {
			return failure(err)
		}
	case "":
		return usageError("--class is required: software or tpm")
	default:
		return usageError("--class %q: quote produces software or tpm evidence only", f.class)
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ev, err := att.Attest(ctx, rd)
	if err != nil {
		return failure(err)
	}
	if f.pubOut != "" {
		if err := atomicfile.WriteFile(f.pubOut, pub, 0o644); err != nil {
			return failure(err)
		}
	} else if attest.Class(f.class) == attest.ClassSoftware {
		fmt.Fprintf(cmd.ErrOrStderr(), "verifiers must pin the platform key %s", pub)
	} else {
		fmt.Fprintln(cmd.ErrOrStderr(), "verifiers must pin the TPM attestation key; write it with --pub-out FILE")
	}
	if f.out == "" {
		_, err := cmd.OutOrStdout().Write(append(ev.Data, '\n'))
		return err
	}
	if err := atomicfile.WriteFile(f.out, ev.Data, 0o644); err != nil {
		return failure(err)
	}
	return nil
}

// readEd25519PrivateKey reads the platform key: a cloister key file (the
// format of "cloister key new" and of the node's DATA_DIR/platform.key,
// see docs/keys.md), or a PEM "PRIVATE KEY" (PKCS#8 Ed25519).
func readEd25519PrivateKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("platform key: %w", err)
	}
	if !strings.HasPrefix(strings.TrimSpace(string(data)), "-----BEGIN") {
		k, err := keys.Load(path)
		if err != nil {
			return nil, fmt.Errorf("platform key: %w", err)
		}
		return k.Signer(), nil
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("platform key %s: not a PEM \"PRIVATE KEY\" block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("platform key %s: %v", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("platform key %s: a %T, want Ed25519", path, k)
	}
	return priv, nil
}
