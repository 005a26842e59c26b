#!/bin/sh
# The fuzz target of the `qexec farm` tests and bench row (tests/tests/farm.rs,
# tests/src/bench/farm.rs): it reacts to markers in its input.
#   CRASH  killed by SIGSEGV          ABORT  killed by SIGABRT
#   HANG   never ends (a timeout)     EXIT3  exits 3
#   SLOW   sleeps 1s, then exits 0    anything else: exits 0
# The input is the file named by $1 when there is one (`@@` mode; its bytes are first
# printed in hex, so a test can compare them with the input), else standard input.
# NUL bytes are dropped before matching (a shell variable cannot hold them).
if [ $# -ge 1 ]; then
  od -An -tx1 -v -- "$1"
  content=$(tr -d '\000' <"$1")
else
  content=$(tr -d '\000')
fi
case $content in
  *CRASH*) kill -SEGV $$ ;;
  *ABORT*) kill -ABRT $$ ;;
  *HANG*) exec sleep 1000 ;;
  *EXIT3*) exit 3 ;;
  *SLOW*) sleep 1 ;;
esac
exit 0
