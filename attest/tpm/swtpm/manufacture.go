package swtpm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// ErrSetupNotInstalled is returned when swtpm_setup or swtpm_localca (the
// Debian package swtpm-tools) is missing.
var ErrSetupNotInstalled = errors.New("swtpm_setup/swtpm_localca are not installed (Debian package swtpm-tools)")

// Manufacture initialises a TPM state in stateDir the way a TPM vendor
// would: it creates the RSA and ECC endorsement keys and EK certificates
// signed by a local CA whose keys and certificates are written to caDir
// (swtpm-localca-rootca-cert.pem is the root, issuercert.pem the issuing
// CA). Both directories must exist. Start the TPM on stateDir afterwards.
func Manufacture(ctx context.Context, stateDir, caDir string) error {
	setup, err := exec.LookPath("swtpm_setup")
	if err != nil {
		return ErrSetupNotInstalled
	}
	localca, err := exec.LookPath("swtpm_localca")
	if err != nil {
		return ErrSetupNotInstalled
	}
	caConf := filepath.Join(caDir, "localca.conf")
	conf := fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", caDir)
	if err := os.WriteFile(caConf, []byte(conf), 0o600); err != nil {
		return err
	}
	opts := filepath.Join(caDir, "localca.options")
	if err := os.WriteFile(opts, []byte("--platform-manufacturer cloister\n--platform-version 1\n--platform-model swtpm\n"), 0o600); err != nil {
		return err
	}
	setupConf := filepath.Join(caDir, "swtpm_setup.conf")
	sc := fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n", localca, caConf, opts)
	if err := os.WriteFile(setupConf, []byte(sc), 0o600); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, setup, "--tpm2", "--tpmstate", stateDir, "--create-ek-cert", "--config", setupConf, "--overwrite")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("swtpm_setup: %w: %s", err, out)
	}
	return nil
}
