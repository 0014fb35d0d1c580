#!/usr/bin/env bash
# Usage: expect_job_failure.sh SECONDS COMMAND...
# Passes when COMMAND (an mpirun job) ends with an error within SECONDS:
# a rank that dies must stop the job, not leave the others hanging.
set -u
limit=$1
shift
start=$(date +%s)
timeout --kill-after=5 "$limit" "$@"
rc=$?
took=$(( $(date +%s) - start ))
# mpirun itself exits 128+N when a rank died of signal N, so time decides.
if [ "$took" -ge "$limit" ]; then
  echo "FAIL: the job still ran after ${limit}s (rc $rc): it hangs when a rank dies"
  exit 1
fi
if [ "$rc" -eq 0 ]; then
  echo "FAIL: the job succeeded; expected it to end with an error"
  exit 1
fi
echo "PASS: the job ended with status $rc after ${took}s"
