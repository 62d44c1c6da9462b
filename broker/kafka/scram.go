package kafka

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// scramClient is a SCRAM client (RFC 5802, no channel binding) for sarama's
// SCRAMClientGeneratorFunc, so SCRAM-SHA-256/512 need no extra dependency.
type scramClient struct {
	newHash func() hash.Hash

	user, pass  string
	clientNonce string
	clientFirst string // without the GS2 header
	serverSig   []byte
	step        int
	done        bool
}

func newSCRAM(h func() hash.Hash) func() *scramClient {
	return func() *scramClient { return &scramClient{newHash: h} }
}

var (
	scramSHA256 = newSCRAM(sha256.New)
	scramSHA512 = newSCRAM(sha512.New)
)

// Begin starts a conversation. authzID must be empty.
func (c *scramClient) Begin(user, pass, authzID string) error {
	if authzID != "" {
		return errors.New("scram: authorization id not supported")
	}
	nonce := make([]byte, 24)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	c.user, c.pass = user, pass
	c.clientNonce = base64.RawStdEncoding.EncodeToString(nonce)
	c.step, c.done = 0, false
	return nil
}

// Step answers the server's challenge.
func (c *scramClient) Step(challenge string) (string, error) {
	c.step++
	switch c.step {
	case 1:
		c.clientFirst = "n=" + scramEscape(c.user) + ",r=" + c.clientNonce
		return "n,," + c.clientFirst, nil
	case 2:
		return c.final(challenge)
	case 3:
		attrs := scramAttrs(challenge)
		if e, ok := attrs["e"]; ok {
			return "", fmt.Errorf("scram: server refused: %s", e)
		}
		v, err := base64.StdEncoding.DecodeString(attrs["v"])
		if err != nil || !hmac.Equal(v, c.serverSig) {
			return "", errors.New("scram: server signature does not match: not the server we talked to")
		}
		c.done = true
		return "", nil
	}
	return "", errors.New("scram: unexpected extra step")
}

func (c *scramClient) final(serverFirst string) (string, error) {
	attrs := scramAttrs(serverFirst)
	nonce, saltB64, iterStr := attrs["r"], attrs["s"], attrs["i"]
	if !strings.HasPrefix(nonce, c.clientNonce) || len(nonce) == len(c.clientNonce) {
		return "", errors.New("scram: server nonce does not extend ours")
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil {
		return "", errors.New("scram: bad salt")
	}
	iters, err := strconv.Atoi(iterStr)
	if err != nil || iters < 1 {
		return "", errors.New("scram: bad iteration count")
	}
	salted, err := pbkdf2.Key(c.newHash, c.pass, salt, iters, c.newHash().Size())
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(c.newHash, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	h := c.newHash()
	h.Write(clientKey)
	storedKey := h.Sum(nil)
	withoutProof := "c=biws,r=" + nonce // biws = base64("n,,")
	authMsg := c.clientFirst + "," + serverFirst + "," + withoutProof
	sig := mac(storedKey, authMsg)
	proof := make([]byte, len(clientKey))
	for i := range clientKey {
		proof[i] = clientKey[i] ^ sig[i]
	}
	c.serverSig = mac(mac(salted, "Server Key"), authMsg)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

// Done reports whether the server's signature was verified.
func (c *scramClient) Done() bool { return c.done }

func scramEscape(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}

func scramAttrs(s string) map[string]string {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(part, "="); ok && len(k) == 1 {
			out[k] = v
		}
	}
	return out
}
