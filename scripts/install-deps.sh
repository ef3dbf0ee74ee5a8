#!/usr/bin/env bash
# Installs the Debian packages llama-pajamas builds against (run as root or with sudo).
# --test adds what only the test suite needs (headless Chromium for the web page test).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS="build-essential cmake pkg-config libjansson-dev libpcre2-dev libutf8proc-dev libcmocka-dev \
libcurl4-openssl-dev libmicrohttpd-dev libedit-dev python3 python3-pip"
if [ "${1:-}" = "--test" ]; then PKGS="$PKGS chromium chromium-driver gcc-aarch64-linux-gnu qemu-user"; fi
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
