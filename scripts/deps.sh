#!/usr/bin/env bash
# Installs the system packages docpipe needs to build, run and test, on
# Debian and Ubuntu (Go itself is assumed). Idempotent and silent when
# everything is there: it asks dpkg first and only then runs apt-get
# (update + install), with sudo when not root.
#
#   postgresql        initdb/postgres for the embedded cluster and the tests
#   tesseract-ocr*    the OCR engine and its English and Korean models
#   libtesseract-dev, libleptonica-dev, build-essential
#                     cgo build of the OCR stage (gosseract), and -race
#   poppler-utils     pdftoppm: PDF pages to images
#   fonts-nanum       Korean fonts, for rendered test pages and workbooks
#   libreoffice-calc  opens the written workbooks in a real spreadsheet
#                     application in one excel test. It is big (~300 MB),
#                     but installed by default so that CI and every
#                     developer run that test; DOCPIPE_NO_LIBREOFFICE=1
#                     leaves it out, and the test then skips, saying why.
set -euo pipefail

packages=(
	build-essential
	postgresql
	tesseract-ocr tesseract-ocr-eng tesseract-ocr-kor
	libtesseract-dev libleptonica-dev
	poppler-utils
	fonts-nanum
)
if [[ "${DOCPIPE_NO_LIBREOFFICE:-}" != 1 ]]; then
	packages+=(libreoffice-calc)
fi

missing=()
for p in "${packages[@]}"; do
	if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]]; then
		missing+=("$p")
	fi
done
if ((${#missing[@]} == 0)); then
	exit 0
fi

if ! command -v apt-get >/dev/null; then
	echo "deps.sh: no apt-get here; install these by hand: ${missing[*]}" >&2
	exit 1
fi
sudo=()
if ((EUID != 0)); then
	if ! command -v sudo >/dev/null; then
		echo "deps.sh: not root and no sudo; as root run: apt-get install ${missing[*]}" >&2
		exit 1
	fi
	sudo=(sudo)
fi

echo "deps.sh: installing ${missing[*]}" >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
