package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// An organisation administers its own node's federation: it publishes
// models (their programs stay on the node) and adds local datasets.
// Every request is a message signed by the organisation's key, which the
// node checks against its own organisation; the connection is pinned to
// the platform key the node names (and certifies its TLS key with).

// Admin is a connection to an organisation's own node.
type Admin struct {
	URL  string
	Info Info
	p    *peer
}

// DialAdmin connects to the node at nodeURL and reads its identity; with
// a non-nil want, the node's platform key must be that one.
func DialAdmin(ctx context.Context, nodeURL string, want ed25519.PublicKey) (*Admin, error) {
	u, err := url.Parse(nodeURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("node URL %q: want https://HOST:PORT", nodeURL)
	}
	base := "https://" + u.Host
	// First contact: learn the key the node claims, then hold it to it.
	probe := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}}} // the key read here is checked below, on a pinned connection
	var info Info
	if err := getJSON(ctx, probe, base+PathInfo, &info); err != nil {
		return nil, err
	}
	pk, err := protocol.ParseEd25519Key(info.PlatformKey)
	if err != nil {
		return nil, fmt.Errorf("node %s: platform key: %w", base, err)
	}
	if want != nil && !pk.Equal(want) {
		return nil, fmt.Errorf("node %s has platform key %s, not %s", base, info.PlatformKey, protocol.FormatEd25519Key(want))
	}
	a := &Admin{URL: base, p: newPeer(pk, nil, nil)}
	if err := getJSON(ctx, a.p.hc, base+PathInfo, &a.Info); err != nil {
		return nil, err
	}
	return a, nil
}

// Version returns the current version of model name on the node's ledger
// (0: none yet).
func (a *Admin) Version(ctx context.Context, name string) (uint64, error) {
	var info Info
	if err := getJSON(ctx, a.p.hc, a.URL+PathInfo+"?model="+url.QueryEscape(name), &info); err != nil {
		return 0, err
	}
	return info.ModelVersion, nil
}

// Workflow returns the receipts of the calls workflow (a session id on
// this node) made, each entry checked: a model.called signed by the
// holder it names, for this workflow.
func (a *Admin) Workflow(ctx context.Context, id string) (*Workflow, error) {
	var wf Workflow
	if err := getJSON(ctx, a.p.hc, a.URL+PathWorkflows+url.PathEscape(id), &wf); err != nil {
		return nil, err
	}
	for _, c := range wf.Calls {
		se, err := verify.DecodeEntry(c.Entry)
		if err != nil {
			return nil, fmt.Errorf("receipt %d: %w", c.Receipt, err)
		}
		if err := se.VerifySignature(); err != nil {
			return nil, fmt.Errorf("receipt %d: %w", c.Receipt, err)
		}
		mc, err := model.DecodeCall(se.Entry.Body)
		if err != nil || se.Entry.Kind != model.KindCalled || se.Entry.Submitter != c.Holder || mc.Workflow != id || mc.Model != c.Model || mc.Function != c.Function || mc.Rows != c.Rows {
			return nil, fmt.Errorf("receipt %d: not a model.called by %s for workflow %s as listed", c.Receipt, c.Holder, id)
		}
	}
	return &wf, nil
}

// Publish signs m with the owner's key and sends it with its program to
// the node, which keeps the program and appends the entry to its ledger;
// it returns the entry's index.
func (a *Admin) Publish(ctx context.Context, owner ed25519.PrivateKey, m *model.Model, program []byte) (uint64, error) {
	if err := m.Check(); err != nil {
		return 0, err
	}
	if err := CheckSchemas(m); err != nil {
		return 0, err
	}
	if digest(program) != m.ProgramSHA256 {
		return 0, fmt.Errorf("the program's SHA-256 is %s, the model names %s", digest(program), m.ProgramSHA256)
	}
	se, err := verify.NewEntry(owner, model.KindPublished, m)
	if err != nil {
		return 0, err
	}
	var out struct {
		Index uint64 `json:"index"`
	}
	if err := a.post(ctx, PathModels, io.MultiReader(bytes.NewReader(frame(se)), bytes.NewReader(program)), &out); err != nil {
		return 0, err
	}
	return out.Index, nil
}

// AddDataset sends the file at path to the node as its local dataset
// name.
func (a *Admin) AddDataset(ctx context.Context, owner ed25519.PrivateKey, name, path string) (*Dataset, error) {
	if err := model.CheckDatasetName(name); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return nil, err
	}
	if size > MaxDataset {
		return nil, fmt.Errorf("%s: %d bytes, limit %d", path, size, int64(MaxDataset))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	d := Dataset{Name: name, SHA256: hex.EncodeToString(h.Sum(nil)), Size: size}
	se, err := verify.NewEntry(owner, KindDataset, d)
	if err != nil {
		return nil, err
	}
	if err := a.post(ctx, PathDataset, io.MultiReader(bytes.NewReader(frame(se)), io.LimitReader(f, size)), nil); err != nil {
		return nil, err
	}
	return &d, nil
}

func (a *Admin) post(ctx context.Context, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, "POST", a.URL+path, body)
	if err != nil {
		return err
	}
	resp, err := a.p.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readJSON(resp, out)
}

func getJSON(ctx context.Context, hc *http.Client, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readJSON(resp, out)
}

func readJSON(resp *http.Response, out any) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			return &RefusedError{Code: eb.Code, Message: eb.Error}
		}
		return fmt.Errorf("node answered %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}
