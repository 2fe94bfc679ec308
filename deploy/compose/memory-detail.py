#!/usr/bin/env python3
"""What is inside the memory of the two services whose growth memory-sample.py cannot explain,
appended as CSV rows to two files:

- ``OUT/soak-postgres.csv``: ``seconds,pid,client,backend_start,anon_kib,rss_kib`` for each of
  PostgreSQL's client backends (``pg_stat_activity``; ``client`` is the broker's address),
  ``anon_kib`` the backend's private memory (``Anonymous`` in ``/proc/PID/smaps_rollup``);
- ``OUT/soak-etcd.csv``: ``seconds,container,heap_inuse_mib,heap_idle_mib,heap_released_mib,keys``
  from each etcd member's Prometheus page (the Go runtime's ``go_memstats_heap_*_bytes``; idle
  less released is heap the runtime holds but does not use) and its key count
  (``etcd_debugging_mvcc_keys_total``).

    memory-detail.py SECONDS OUT POSTGRES_CONTAINER ETCD_CONTAINER...

A container that is gone or stopped is left out. The PostgreSQL sample runs in the container
(``docker exec``), as the ``postgres`` user that owns the backends.
"""

import csv
import json
import subprocess
import sys
import urllib.request

MIB = 2**20

# Runs in the PostgreSQL container: one line per client backend, pid|client|backend_start,
# then its memory from /proc.
BACKENDS = r"""
psql -h 127.0.0.1 -U nisshi -d nisshi -AtF'|' -c \
  "select pid, coalesce(host(client_addr), ''), backend_start from pg_stat_activity
   where backend_type = 'client backend' and pid <> pg_backend_pid()" |
while IFS='|' read -r pid client started; do
  anon=$(awk '/^Anonymous:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null) || continue
  rss=$(awk '/^Rss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null) || continue
  [[ -n "$anon" ]] && echo "$pid,$client,$started,$anon,$rss"
done
"""


def postgres(seconds, out, container):
    try:
        result = subprocess.run(["docker", "exec", container, "bash", "-c", BACKENDS],
                                capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return
    with open(f"{out}/soak-postgres.csv", "a", newline="") as file:
        for line in result.stdout.splitlines():
            file.write(f"{seconds},{line}\n")


def address(container):
    result = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    networks = json.loads(result.stdout)[0]["NetworkSettings"]["Networks"]
    return next((network["IPAddress"] for network in networks.values() if network.get("IPAddress")), None)


def etcd(seconds, out, container):
    ip = address(container)
    if not ip:
        return
    try:
        page = urllib.request.urlopen(f"http://{ip}:2381/metrics", timeout=5).read().decode()
    except OSError:
        return
    values = {}
    for line in page.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    name = json.loads(subprocess.run(["docker", "inspect", "--format", "{{json .Name}}", container],
                                     capture_output=True, text=True, check=False).stdout or '""').lstrip("/")
    with open(f"{out}/soak-etcd.csv", "a", newline="") as file:
        csv.writer(file).writerow([
            seconds, name,
            f"{values.get('go_memstats_heap_inuse_bytes', 0) / MIB:.1f}",
            f"{values.get('go_memstats_heap_idle_bytes', 0) / MIB:.1f}",
            f"{values.get('go_memstats_heap_released_bytes', 0) / MIB:.1f}",
            int(values.get("etcd_debugging_mvcc_keys_total", 0)),
        ])


def main():
    seconds, out, postgres_container, *etcd_containers = sys.argv[1:]
    postgres(seconds, out, postgres_container)
    for container in etcd_containers:
        etcd(seconds, out, container)


if __name__ == "__main__":
    main()
