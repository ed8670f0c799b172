package main

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
)

func serveCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return errors.New("not yet")
}
func processCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return errors.New("not yet")
}

var errFailedDocuments = errors.New("failed documents")

func benchOCR(ctx context.Context, dir string, pool *pgxpool.Pool, out io.Writer, log *slog.Logger) error {
	return errors.New("not yet")
}
