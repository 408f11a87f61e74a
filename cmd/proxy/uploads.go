package main

import (
	"log/slog"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/server"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upload"
)

// uploads turns on `nix copy --to` when --write-token-file is given; it
// returns nil (uploads off) otherwise. check has read the token. Call the returned stop at shutdown.
func (s *stack) uploads(cfg *serveConfig, log *slog.Logger) (*server.UploadConfig, func(), error) {
	if cfg.writeTokenFile == "" {
		return nil, func() {}, nil
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
	s.receiver = rcv
	return &server.UploadConfig{Uploads: rcv, Token: cfg.writeToken, MaxNARSize: cfg.uploadMaxSize}, rcv.Close, nil
}
