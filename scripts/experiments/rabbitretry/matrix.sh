#!/bin/bash
# The experiment matrix for notes/rabbitmq-retry-experiment.md.
cd "$(dirname "$0")/../../.."
go build -o /tmp/rabbitretry ./scripts/experiments/rabbitretry
B="/tmp/rabbitretry -script $PWD/scripts/rabbitmq-cluster.sh"
echo "== start $(date +%T)"
for v in classic-ttl quorum-dlx hold-republish hold-nack; do $B -mode consumer -variant $v -kill=false; done
for v in classic-ttl quorum-dlx; do $B -mode park -variant $v -runs 3; done
for v in classic-ttl quorum-dlx hold-republish hold-nack; do $B -mode consumer -variant $v -runs 3; done
for v in classic-ttl quorum-dlx hold-republish hold-nack; do $B -mode consumer -variant $v -work 5ms -runs 3; done
$B -mode probe
for ka in 300ms 1s 3s; do $B -mode fresh -variant classic-ttl -kill-after $ka -runs 3; done
$B -mode fresh -variant quorum-dlx -kill-after 300ms
$B -mode fresh -variant quorum-dlx -kill-after 3s
echo "== end $(date +%T)"
