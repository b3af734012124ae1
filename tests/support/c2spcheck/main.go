// Command c2spcheck verifies AuditSeal's signed heads, cosignatures and proofs with the
// transparency-dev reference implementations, so AuditSeal's own code is not the only judge
// of its output. Only the test suite builds and runs it.
//
//	c2spcheck vectors SEED_HEX NAME TEXT_FILE
//	    prints the Go reference's key hash, vkey and note signature for a fixed seed
//	c2spcheck proof LOG_VKEY POLICY_FILE PROOF_FILE LEAF_HASH_HEX
//	    tlog-proof: log signature, witness quorum (tlog-policy), RFC 6962 inclusion
//	c2spcheck consistency LOG_VKEY OLD_NOTE NEW_NOTE PROOF_FILE
//	    both heads signed by the log, RFC 6962 consistency proof between them
//
// Exit 0 and one "ok ..." line when everything verifies, exit 1 and "FAIL: ..." otherwise.
package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	f_log "github.com/transparency-dev/formats/log"
	f_note "github.com/transparency-dev/formats/note"
	f_proof "github.com/transparency-dev/formats/proof"
	f_witness "github.com/transparency-dev/formats/witness"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

func fail(format string, args ...any) {
	fmt.Printf("FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func read(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("reading %s: %v", path, err)
	}
	return data
}

func logVerifier(vkey string) note.Verifier {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		fail("log vkey: %v", err)
	}
	return v
}

func vectors(seedHex, name, textFile string) {
	seed, err := hex.DecodeString(seedHex)
	if err != nil || len(seed) != ed25519.SeedSize {
		fail("seed must be 32 bytes of hex")
	}
	private := ed25519.NewKeyFromSeed(seed)
	skey, vkey, err := note.GenerateKey(bytes.NewReader(seed), name)
	if err != nil {
		fail("generate key: %v", err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		fail("signer: %v", err)
	}
	signed, err := note.Sign(&note.Note{Text: string(read(textFile))}, signer)
	if err != nil {
		fail("sign: %v", err)
	}
	cosigVkey, err := f_note.VKeyToCosignatureV1(vkey)
	if err != nil {
		fail("cosignature vkey: %v", err)
	}
	cosigVerifier, err := f_note.NewVerifierForCosignatureV1(cosigVkey)
	if err != nil {
		fail("cosignature verifier: %v", err)
	}
	fmt.Printf("public %x\n", private.Public().(ed25519.PublicKey))
	fmt.Printf("skey %s\n", skey)
	fmt.Printf("vkey %s\n", vkey)
	fmt.Printf("key_hash %08x\n", signer.KeyHash())
	fmt.Printf("cosignature_vkey %s\n", cosigVkey)
	fmt.Printf("cosignature_key_hash %08x\n", cosigVerifier.KeyHash())
	fmt.Printf("note %s\n", base64.StdEncoding.EncodeToString(signed))
}

func checkProof(logVkey, policyFile, proofFile, leafHex string) {
	var p f_proof.TLogProof
	if err := p.Unmarshal(read(proofFile)); err != nil {
		fail("tlog-proof: %v", err)
	}
	policy, err := f_witness.ParsePolicy(read(policyFile))
	if err != nil {
		fail("policy: %v", err)
	}
	lv := logVerifier(logVkey)
	cp, _, _, err := f_log.ParseCheckpoint(p.Checkpoint, lv.Name(), lv)
	if err != nil {
		fail("checkpoint: %v", err)
	}
	if !policy.Satisfied(p.Checkpoint) {
		fail("checkpoint of size %d does not satisfy the witness policy's quorum", cp.Size)
	}
	leaf, err := hex.DecodeString(leafHex)
	if err != nil {
		fail("leaf hash hex: %v", err)
	}
	hashes := make([][]byte, len(p.Hashes))
	for i := range p.Hashes {
		hashes[i] = p.Hashes[i][:]
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, p.Index, cp.Size, leaf, hashes, cp.Hash); err != nil {
		fail("inclusion of index %d in size %d: %v", p.Index, cp.Size, err)
	}
	fmt.Printf("ok proof origin=%s index=%d size=%d\n", cp.Origin, p.Index, cp.Size)
}

func checkConsistency(logVkey, oldFile, newFile, proofFile string) {
	lv := logVerifier(logVkey)
	older, _, _, err := f_log.ParseCheckpoint(read(oldFile), lv.Name(), lv)
	if err != nil {
		fail("old checkpoint: %v", err)
	}
	newer, _, _, err := f_log.ParseCheckpoint(read(newFile), lv.Name(), lv)
	if err != nil {
		fail("new checkpoint: %v", err)
	}
	var hashes [][]byte
	scanner := bufio.NewScanner(bytes.NewReader(read(proofFile)))
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" {
			continue
		}
		h, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			fail("proof line: %v", err)
		}
		hashes = append(hashes, h)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, older.Size, newer.Size, hashes, older.Hash, newer.Hash); err != nil {
		fail("consistency %d -> %d: %v", older.Size, newer.Size, err)
	}
	fmt.Printf("ok consistency origin=%s %d->%d\n", newer.Origin, older.Size, newer.Size)
}

func main() {
	args := os.Args[1:]
	switch {
	case len(args) == 4 && args[0] == "vectors":
		vectors(args[1], args[2], args[3])
	case len(args) == 5 && args[0] == "proof":
		checkProof(args[1], args[2], args[3], args[4])
	case len(args) == 5 && args[0] == "consistency":
		checkConsistency(args[1], args[2], args[3], args[4])
	default:
		fmt.Fprintln(os.Stderr, "usage: c2spcheck vectors SEED NAME TEXT | proof LOG_VKEY POLICY PROOF LEAF_HEX | consistency LOG_VKEY OLD NEW PROOF")
		os.Exit(2)
	}
}
