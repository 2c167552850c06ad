package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/blob/server"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/internal/bytesize"
	"github.com/cloisterhq/cloister/keys"
)

func newBlobCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "blob",
		Short: "Put and get content-addressed blobs on OCI registries and Cloister stores",
		Long: `Blobs are named by their digest ("sha256:<hex>") and kept in OCI registries or
in a Cloister store (cloister blob serve, or cloister node --blob-listen). A
store URL is http(s)://HOST[:PORT]/REPOSITORY. A get takes several stores
and uses the first copy whose bytes match the digest; a store that is down,
lacks the blob or serves other bytes is skipped. docs/storage.md explains
the formats and what a store operator can learn.`,
		Example: `  cloister blob put model.wasm.sealed --store http://127.0.0.1:7444/programs --key alice.key
  cloister blob get sha256:3f… --store http://127.0.0.1:7444/programs --store https://registry.example/mirror --out model.wasm.sealed
  cloister blob serve --listen 127.0.0.1:7444 --data ./blobs --push-key ed25519:…`,
	}
	cmd.AddCommand(newBlobPutCmd(), newBlobGetCmd(), newBlobServeCmd())
	return cmd
}

func blobOptions(keyFile string) (blob.Options, error) {
	if keyFile == "" {
		return blob.Options{}, nil
	}
	k, err := keys.Load(keyFile)
	if err != nil {
		return blob.Options{}, err
	}
	return blob.Options{Key: k.Signer()}, nil
}

func newBlobPutCmd() *cobra.Command {
	var store, keyFile string
	cmd := &cobra.Command{
		Use:   "put FILE|DIR --store URL [--key FILE]",
		Short: "Upload a file (or a flat directory) and print its digest",
		Long: `put uploads FILE as a blob, with a deterministic manifest tagged
"sha256-<hex>" so that registries keep it, and prints the blob's digest. For
a directory it uploads each file and a directory manifest listing names,
digests and sizes, and prints the manifest's digest: the value a policy pins
for a directory input. Cloister stores require --key (a key file whose
signing key the store's operator allowed); other registries take their own
credentials and ignore it.

Exit status: 0 uploaded; 1 the store refused or failed; 2 bad usage or
unreadable FILE.`,
		Example: `  cloister blob put weights.bin --store http://127.0.0.1:7444/models --key alice.key
  cloister blob put ./dataset --store http://127.0.0.1:5000/data`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if store == "" {
				return usageError("blob put: --store URL is required")
			}
			opts, err := blobOptions(keyFile)
			if err != nil {
				return usageError("blob put: %v", err)
			}
			s, err := blob.OpenStore(store, opts)
			if err != nil {
				return usageError("blob put: %v", err)
			}
			fi, err := os.Stat(args[0])
			if err != nil {
				return usageError("blob put: %v", err)
			}
			var d blob.Digest
			if fi.IsDir() {
				d, err = s.PushDir(cmd.Context(), args[0])
			} else {
				d, _, err = s.PushFile(cmd.Context(), args[0])
			}
			if err != nil {
				return failure(fmt.Errorf("blob put: %w", err))
			}
			fmt.Fprintln(cmd.OutOrStdout(), d)
			return nil
		},
	}
	cmd.Flags().StringVar(&store, "store", "", "store URL: http(s)://HOST[:PORT]/REPOSITORY")
	cmd.Flags().StringVar(&keyFile, "key", "", "key file that signs the upload (Cloister stores)")
	return cmd
}

func newBlobGetCmd() *cobra.Command {
	var stores []string
	var out, maxSize string
	cmd := &cobra.Command{
		Use:   "get DIGEST --store URL [--store URL...] --out FILE",
		Short: "Fetch a blob from the first store whose copy matches its digest",
		Long: `get fetches blob DIGEST from the stores in the order given and writes it to
--out, which appears only once all of it has arrived and hashed to DIGEST.
A store that is down, does not have the blob, or serves other bytes is
skipped for the next; if none serves it, the error lists each store's reason.

Exit status: 0 fetched; 1 no store served a matching copy, or --out exists;
2 bad usage.`,
		Example: `  cloister blob get sha256:3f… --store http://10.0.0.5:7444/models --store http://127.0.0.1:5000/models --out w.bin`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(stores) == 0 || out == "" {
				return usageError("blob get: --store URL and --out FILE are required")
			}
			d, err := blob.ParseDigest(args[0])
			if err != nil {
				return usageError("blob get: %v", err)
			}
			var max int64
			if maxSize != "" {
				if max, err = bytesize.Parse(maxSize); err != nil {
					return usageError("blob get: --max-size: %v", err)
				}
			}
			loc, err := blob.OpenLocation(stores, blob.Options{})
			if err != nil {
				return usageError("blob get: %v", err)
			}
			if _, err := os.Lstat(out); err == nil {
				return failure(fmt.Errorf("blob get: %s already exists; refusing to overwrite it", out))
			}
			from, n, err := loc.Fetch(cmd.Context(), d, max, func(int64) (blob.Sink, error) {
				return atomicfile.Create(out, 0o644, atomicfile.NoReplace())
			})
			if err != nil {
				return failure(fmt.Errorf("blob get: %w", err))
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d bytes from %s\n", out, n, from)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&stores, "store", nil, "store URL to try, in order (repeatable)")
	cmd.Flags().StringVar(&out, "out", "", "file to create (must not exist)")
	cmd.Flags().StringVar(&maxSize, "max-size", "", "refuse a blob larger than this, e.g. 2GiB (default: no limit)")
	return cmd
}

func newBlobServeCmd() *cobra.Command {
	var listen, dataDir string
	var pushKeys []string
	var lim storeLimitFlags
	cmd := &cobra.Command{
		Use:   "serve --listen ADDR --data DIR [--push-key KEY...]",
		Short: "Serve a Cloister blob store (the OCI protocol subset Cloister uses)",
		Long: `serve runs the on-disk blob store that a node also embeds (cloister node
--blob-listen): plain HTTP on ADDR, blobs under DIR. Reads are open (blobs are
ciphertexts or public data, checked by digest by every reader); writes must
be signed by one of the --push-key keys (ed25519:…, or a file holding one,
such as what "cloister key public" prints), each within its quota.
docs/storage.md lists the endpoints and limits.`,
		Example: `  cloister key public alice.key > alice.pub
  cloister blob serve --listen 127.0.0.1:7444 --data ./blobs --push-key alice.pub
  cloister blob serve --listen 127.0.0.1:7444 --data ./blobs --push-key ed25519:…=1GiB`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if listen == "" || dataDir == "" {
				return usageError("blob serve: --listen ADDR and --data DIR are required")
			}
			opts, err := lim.options(dataDir, pushKeys)
			if err != nil {
				return usageError("blob serve: %v", err)
			}
			srv, err := server.New(opts)
			if err != nil {
				return failure(err)
			}
			defer srv.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return failure(fmt.Errorf("blob serve: %w", err))
			}
			hs, errc := srv.Serve(ln)
			fmt.Fprintf(cmd.ErrOrStderr(), "blob store on http://%s (data %s, %d pusher keys)\n", ln.Addr(), dataDir, len(pushKeys))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			select {
			case err := <-errc:
				return failure(err)
			case <-ctx.Done():
				sctx, cancel := context.WithTimeout(context.Background(), 10e9)
				defer cancel()
				if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
					return failure(err)
				}
				return nil
			}
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "TCP address to serve on, e.g. 127.0.0.1:7444")
	cmd.Flags().StringVar(&dataDir, "data", "", "directory holding the blobs")
	cmd.Flags().StringArrayVar(&pushKeys, "push-key", nil, "signing key allowed to write: ed25519:… or a public-key FILE, optionally =QUOTA (repeatable)")
	lim.register(cmd)
	return cmd
}

// serveNodeBlobStore serves the node's embedded blob store on addr until
// the returned function stops it.
func serveNodeBlobStore(addr string, opts server.Options, log *slog.Logger) (stop func(), err error) {
	opts.Logger = log
	srv, err := server.New(opts)
	if err != nil {
		return nil, failure(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		srv.Close()
		return nil, failure(fmt.Errorf("node: blob store: %w", err))
	}
	hs, _ := srv.Serve(ln)
	log.Info("blob store listening", "url", "http://"+ln.Addr().String(), "pushers", len(opts.Pushers), "data", opts.Dir)
	return func() { hs.Close(); srv.Close() }, nil
}

// storeLimitFlags are the store's limits as flags, shared by blob serve
// and node --blob-listen.
type storeLimitFlags struct {
	maxBlob, maxTotal, quota string
}

func (l *storeLimitFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.maxBlob, "blob-max-size", "4GiB", "largest blob the store accepts")
	cmd.Flags().StringVar(&l.maxTotal, "blob-max-total", "64GiB", "bytes the store holds in all")
	cmd.Flags().StringVar(&l.quota, "blob-quota", "16GiB", "bytes each push key may store unless its --push-key says KEY=QUOTA")
}

func (l *storeLimitFlags) options(dir string, pushKeys []string) (server.Options, error) {
	o := server.Options{Dir: dir, Pushers: map[string]int64{}, Logger: slog.Default()}
	var err error
	for _, f := range []struct {
		s string
		p *int64
	}{{l.maxBlob, &o.Limits.MaxBlob}, {l.maxTotal, &o.Limits.MaxTotal}, {l.quota, &o.Limits.DefaultQuota}} {
		if *f.p, err = bytesize.Parse(f.s); err != nil {
			return o, err
		}
	}
	for _, pk := range pushKeys {
		k, q := pk, int64(0)
		if _, err := keys.ParseSigningKey(pk); err != nil {
			// KEY=QUOTA; the key's base64 may itself end in "=".
			if i := strings.LastIndexByte(pk, '='); i > 0 {
				if qq, qerr := bytesize.Parse(pk[i+1:]); qerr == nil {
					k, q = pk[:i], qq
				}
			}
		}
		if _, err := keys.ParseSigningKey(k); err != nil {
			if strings.HasPrefix(k, protocol.Ed25519KeyPrefix) {
				return o, fmt.Errorf("--push-key %q: %v", pk, err)
			}
			// A file: what 'cloister key public' printed, or a key file.
			signing, _, ferr := publicKeysOf(k)
			if ferr != nil {
				return o, fmt.Errorf("--push-key %q: neither a signing key (ed25519:…) nor a file holding one: %v", pk, ferr)
			}
			k = signing
		}
		o.Pushers[k] = q
	}
	return o, nil
}
