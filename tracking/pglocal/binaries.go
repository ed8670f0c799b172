package pglocal

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// InstallHint is the command that installs what pglocal needs on Debian and Ubuntu.
const InstallHint = "apt-get install postgresql"

// ErrNotInstalled is returned (wrapped) when no PostgreSQL server binaries
// can be found. Its message names the package to install.
var ErrNotInstalled = errors.New("PostgreSQL server binaries (initdb, postgres) not found on PATH or under " +
	debianBinGlob + ": install them with `" + InstallHint + "`")

// debianBinGlob is where Debian and Ubuntu put the server binaries; only a
// few of them are linked into /usr/bin, and initdb and postgres are not.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// binaries are the server programs of one PostgreSQL installation.
type binaries struct {
	dir      string // holds both programs
	initdb   string
	postgres string
	major    int // e.g. 15
}

// findBinaries returns the server binaries to use. binDir, when set, is the
// only place looked at. Otherwise the directories on path come first, then
// the versioned directories matching glob, newest first. When want is not 0
// (the major version of an existing cluster) only that version is accepted.
func findBinaries(binDir, path, glob string, want int) (*binaries, error) {
	var dirs []string
	if binDir != "" {
		dirs = []string{binDir}
	} else {
		dirs = append(dirs, filepath.SplitList(path)...)
		dirs = append(dirs, versionedDirs(glob)...)
	}
	var seen []string
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		b, ok := binariesIn(dir)
		if !ok {
			continue
		}
		if want != 0 && b.major != want {
			seen = append(seen, fmt.Sprintf("%d (%s)", b.major, dir))
			continue
		}
		return b, nil
	}
	switch {
	case len(seen) > 0:
		return nil, fmt.Errorf("the cluster needs PostgreSQL %d binaries, found only version %s: install them with `apt-get install postgresql-%d`",
			want, strings.Join(seen, ", "), want)
	case binDir != "":
		return nil, fmt.Errorf("no initdb and postgres in %s: %w", binDir, ErrNotInstalled)
	default:
		return nil, ErrNotInstalled
	}
}

// versionedDirs expands glob (…/postgresql/*/bin) newest version first.
func versionedDirs(glob string) []string {
	matches, _ := filepath.Glob(glob) // the pattern is constant: no error
	version := func(dir string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		return v
	}
	sort.SliceStable(matches, func(i, j int) bool { return version(matches[i]) > version(matches[j]) })
	return matches
}

// binariesIn reports the binaries in dir when it holds both programs.
func binariesIn(dir string) (*binaries, bool) {
	initdb, postgres := filepath.Join(dir, "initdb"), filepath.Join(dir, "postgres")
	if !isExecutable(initdb) || !isExecutable(postgres) {
		return nil, false
	}
	major, err := majorVersion(postgres)
	if err != nil {
		return nil, false
	}
	return &binaries{dir: dir, initdb: initdb, postgres: postgres, major: major}, true
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// majorVersion runs `postgres --version` ("postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)").
func majorVersion(postgres string) (int, error) {
	out, err := exec.Command(postgres, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", postgres, err)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("%s --version: unexpected output %q", postgres, out)
	}
	return strconv.Atoi(string(m[1]))
}
