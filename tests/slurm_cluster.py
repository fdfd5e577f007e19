"""A one-node SLURM cluster on this machine, for the real-SLURM tests (tests/test_slurm.py) and for a laptop.

It writes its own ``slurm.conf`` (one node named after ``hostname -s``, one partition ``debug``, no accounting, no
cgroups) and its own munge key into a folder, then starts ``munged``, ``slurmctld`` and ``slurmd`` as root with
that configuration (their own munge socket and ports, so a system SLURM or munge is left alone) and waits until
``sinfo`` shows the node idle. Clients find it through ``SLURM_CONF``.

Needs root and the Debian/Ubuntu packages: ``apt-get install -y slurmctld slurmd slurm-client munge``.

As a script (the daemons keep running after it exits; their pids are kept in the folder)::

    sudo python tests/slurm_cluster.py start [--dir /tmp/lora_repro_slurm] [--cpus 2] [--mem-mb 4000]
    export SLURM_CONF=/tmp/lora_repro_slurm/slurm.conf       # printed by start
    sinfo; python -m lora_repro -m smoke=true hydra/launcher=slurm hydra.launcher.partition=debug ...
    sudo python tests/slurm_cluster.py stop  [--dir /tmp/lora_repro_slurm]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
PIDS_FILE = "pids"
DEFAULT_DIR = Path("/tmp/lora_repro_slurm")


class ClusterUnavailable(RuntimeError):
    """The cluster cannot run here (missing packages, not root, a daemon that does not come up): the reason."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_programs() -> list[str]:
    return [p for p in (*DAEMONS, "sbatch", "sinfo", "squeue", "scontrol", "scancel", "srun") if not shutil.which(p)]


def slurm_conf(folder: Path, node: str, cpus: int, mem_mb: int) -> str:
    ctld, slurmd = free_port(), free_port()
    return f"""\
# written by tests/slurm_cluster.py: a one-node cluster without accounting
ClusterName=lorarepro
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long SLURM holds a requeued job before it may start again (default 120 s)
AuthInfo=socket={folder}/munge/munge.socket,cred_expire=15
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5
SlurmdParameters=config_overrides
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
ReturnToService=2
MaxJobCount=200
MinJobAge=300
KillWait=5
InactiveLimit=0
OverTimeLimit=0
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def client_env(folder: Path) -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}


def sinfo_state(folder: Path) -> str:
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=client_env(folder), capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def log_tail(folder: Path, lines: int = 15) -> str:
    parts = []
    for name in ("munged.log", "slurmctld.log", "slurmd.log"):
        path = folder / name
        if path.is_file():
            parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(parts)


def start(folder: Path = DEFAULT_DIR, cpus: int = 2, mem_mb: int = 4000, timeout_s: float = 60) -> Path:
    """Write the configuration, start the three daemons (detached) and wait until the node is idle: the path of
    ``slurm.conf``. Raises ClusterUnavailable (daemons stopped again) when that cannot happen."""
    missing = missing_programs()
    if missing:
        raise ClusterUnavailable(f"SLURM/munge not installed (missing {', '.join(missing)}): "
                                 "apt-get install -y slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        raise ClusterUnavailable("the one-node SLURM cluster runs its daemons as root (run as root / with sudo)")
    folder = Path(folder).resolve()
    if (folder / PIDS_FILE).is_file():
        stop(folder)
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "munge").chmod(0o700)
    key = folder / "munge" / "munge.key"
    if not key.is_file():
        key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    node = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, node, cpus, mem_mb))
    commands = {
        "munged": ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={folder}/munge/munge.socket",
                   f"--pid-file={folder}/munge/munged.pid", f"--log-file={folder}/munged.log",
                   f"--seed-file={folder}/munge/munge.seed"],
        "slurmctld": ["slurmctld", "-D", "-c", "-i", "-f", str(conf)],
        "slurmd": ["slurmd", "-D", "-f", str(conf), "-N", node],
    }
    pids = []
    try:
        for name in DAEMONS:
            with open(folder / f"{name}.out", "w") as out:
                process = subprocess.Popen(commands[name], stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True, env=client_env(folder))
            pids.append(f"{name} {process.pid}")
            (folder / PIDS_FILE).write_text("\n".join(pids) + "\n")
            if name == "munged":
                deadline = time.time() + 10
                while not (folder / "munge" / "munge.socket").exists() and time.time() < deadline:
                    if process.poll() is not None:
                        raise ClusterUnavailable(f"munged exited with {process.returncode}:\n"
                                                 f"{(folder / 'munged.out').read_text()}{log_tail(folder)}")
                    time.sleep(0.2)
        deadline, state = time.time() + timeout_s, ""
        while time.time() < deadline:
            state = sinfo_state(folder)
            if state == "idle":
                return conf
            if state in ("down", "drained", "down*"):  # ReturnToService=2 should bring it back; nudge it
                subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], env=client_env(folder),
                               capture_output=True, timeout=10)
            time.sleep(1)
        raise ClusterUnavailable(f"the node did not become idle within {timeout_s:.0f} s (sinfo: {state!r})\n"
                                 f"{log_tail(folder)}")
    except BaseException:
        stop(folder)
        raise


def cancel_all_jobs(folder: Path, wait_s: float = 30) -> None:
    """scancel every job of this (private) cluster and wait until they are gone, so no job outlives slurmd."""
    env = client_env(folder)
    try:
        subprocess.run(["scancel", "--user", str(os.geteuid())], env=env, capture_output=True, timeout=10)
        deadline = time.time() + wait_s
        while time.time() < deadline:
            left = subprocess.run(["squeue", "-h", "-t", "PD,R,CG,S,RQ,RF,RS,RH,SE", "-o", "%i"], env=env,
                                  capture_output=True, text=True, timeout=10)
            if left.returncode or not left.stdout.strip():
                return
            time.sleep(1)
    except (OSError, subprocess.TimeoutExpired):
        pass


def stop(folder: Path = DEFAULT_DIR, wait_s: float = 15) -> None:
    """Cancel the cluster's jobs, then stop the daemons started by ``start`` in this folder (by their pids),
    slurmd first."""
    folder = Path(folder).resolve()
    pids_file = folder / PIDS_FILE
    if not pids_file.is_file():
        return
    cancel_all_jobs(folder)
    entries = [line.split() for line in pids_file.read_text().splitlines() if line.strip()]
    for name, pid in reversed(entries):
        pid = int(pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.time() + wait_s
        while time.time() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:  # our child (the pytest fixture): reaped
                    break
            except ChildProcessError:  # started by another process (the script's start): poll its existence
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
            time.sleep(0.2)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    pids_file.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"configuration, state and logs ({DEFAULT_DIR})")
    parser.add_argument("--cpus", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--mem-mb", type=int, default=4000)
    args = parser.parse_args(argv)
    if args.action == "stop":
        stop(args.dir)
        print(f"stopped the daemons of {args.dir}")
        return 0
    try:
        conf = start(args.dir, cpus=args.cpus, mem_mb=args.mem_mb)
    except ClusterUnavailable as error:
        print(f"slurm_cluster: {error}", file=sys.stderr)
        return 1
    print(f"one-node SLURM cluster up (partition debug). Use it with:\n  export SLURM_CONF={conf}\n"
          f"Stop it with: python {Path(__file__)} stop --dir {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
