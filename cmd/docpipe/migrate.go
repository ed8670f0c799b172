package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/docpipe/docpipe/tracking"
	"github.com/pressly/goose/v3"
)

func migrateCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("migrate", "migrate [flags] up|down|status|version", stderr)
	c.register(fs, getenv)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("%w: want exactly one of up, down, status, version", errUsage)
	}
	sub := fs.Arg(0)
	switch sub {
	case "up", "down", "status", "version":
	default:
		return fmt.Errorf("%w: unknown migrate command %q (want up, down, status or version)", errUsage, sub)
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	db, err := c.openDatabase(ctx, log, 2, false)
	if err != nil {
		return err
	}
	defer db.Close()
	m, err := tracking.NewMigrator(db.Pool)
	if err != nil {
		return err
	}
	defer m.Close()
	switch sub {
	case "up":
		n, err := m.Up(ctx)
		if err != nil {
			return err
		}
		v, _ := m.Version(ctx)
		fmt.Fprintf(stdout, "applied %d migration(s); schema version %d\n", n, v)
	case "down":
		if err := m.Down(ctx); err != nil {
			if errors.Is(err, goose.ErrNoNextVersion) {
				return errors.New("no migration to undo")
			}
			return err
		}
		v, _ := m.Version(ctx)
		fmt.Fprintf(stdout, "undid one migration; schema version %d\n", v)
	case "status":
		st, err := m.Status(ctx)
		if err != nil {
			return err
		}
		for _, s := range st {
			state := "pending"
			if s.Applied {
				state = "applied"
			}
			fmt.Fprintf(stdout, "%-8s %05d %s\n", state, s.Version, s.Name)
		}
	case "version":
		v, err := m.Version(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, v)
	}
	return nil
}
