#!/usr/bin/env python3
"""One memory sample of the given containers, as CSV rows on stdout:
``seconds,container,memory_mib,anon_mib,shmem_mib,usage_mib,started_at``.

``memory_mib`` is the memory the service itself holds: anonymous memory (heap, stacks;
``anon_mib``) plus shared memory (PostgreSQL's shared buffers; ``shmem_mib``), from the
container's cgroup ``memory.stat`` (cgroup v1: ``total_rss``, ``total_shmem``; v2: ``anon``,
``shmem``). It leaves out the kernel's file cache, which a database or a broker fills with the
files it writes and which the kernel reclaims under pressure. ``usage_mib`` is what
``docker stats`` shows (cgroup usage less inactive file pages), cache included, for reference.
``started_at`` is when the container's process last started (Docker's ``State.StartedAt``): a
container a fault killed and restarted starts a new life, whose memory grows from zero again.

    memory-sample.py SECONDS CONTAINER_ID...

Reads the Docker Engine API on $DOCKER_HOST (unix:// only) or /var/run/docker.sock; a container
that is gone or stopped is left out of the sample.
"""

import http.client
import json
import os
import socket
import sys

MIB = 2**20


class DockerSocket(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def get(socket_path, path):
    connection = DockerSocket(socket_path)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            return None
        return json.loads(body)
    finally:
        connection.close()


def main():
    seconds, containers = sys.argv[1], sys.argv[2:]
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    socket_path = host.removeprefix("unix://")
    for container in containers:
        try:
            sample = get(socket_path, f"/containers/{container}/stats?stream=false&one-shot=true")
            started_at = ((get(socket_path, f"/containers/{container}/json") or {}).get("State") or {}).get("StartedAt", "")
        except OSError:
            continue
        memory = (sample or {}).get("memory_stats") or {}
        counters = memory.get("stats") or {}
        if not counters:
            continue  # stopped: Docker reports no memory for it
        if "anon" in counters:  # cgroup v2
            anon, shmem = counters["anon"], counters.get("shmem", 0)
            inactive_file = counters.get("inactive_file", 0)
        else:  # cgroup v1
            anon, shmem = counters.get("total_rss", 0), counters.get("total_shmem", 0)
            inactive_file = counters.get("total_inactive_file", 0)
        usage = memory.get("usage", 0) - inactive_file
        name = sample.get("name", container).lstrip("/")
        if "-run-" in name:
            continue  # a one-off CLI container
        own = anon + shmem
        print(f"{seconds},{name},{own / MIB:.1f},{anon / MIB:.1f},{shmem / MIB:.1f},{usage / MIB:.1f},{started_at}")


if __name__ == "__main__":
    main()
