package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upload"
)

// uploads turns on `nix copy --to` when --write-token-file is given; it
// returns nil (uploads off) otherwise. Call the returned stop at shutdown.
func (s *stack) uploads(cfg *serveConfig, log *slog.Logger) (*server.UploadConfig, func(), error) {
	if cfg.writeTokenFile == "" {
		return nil, func() {}, nil
	}
	b, err := os.ReadFile(cfg.writeTokenFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--write-token-file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if len(token) < 16 {
		return nil, nil, errors.New("--write-token-file: the token must be at least 16 characters (e.g. `openssl rand -hex 32`)")
	}
	if cfg.uploadMaxSize <= 0 {
		return nil, nil, errors.New("--upload-max-size: must be positive")
	}
	rcv, err := upload.New(upload.Options{
		Store:     s.store,
		Paths:     s.cache,
		Keys:      s.keys,
		SecretKey: s.secretKey,
		Observe: func(kind, outcome string, n int64) {
			s.metrics.Uploads.WithLabelValues(kind, outcome).Inc()
			if outcome == "ok" {
				s.metrics.UploadBytes.WithLabelValues(kind).Add(float64(n))
			}
		},
		Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	return &server.UploadConfig{Uploads: rcv, Token: token, MaxNARSize: cfg.uploadMaxSize}, rcv.Close, nil
}
