"""The machine a peer-benchmark run ran on: CPU model, INT8 instruction sets, load and steal."""

import os


def _cpuinfo():
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def load_average():
    """The 1-minute load average, or None where /proc/loadavg is missing."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def cpu_ticks():
    """(steal, total) clock ticks of all CPUs since boot, from /proc/stat (user .. steal)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    values = [int(v) for v in fields[1:9]]
    return values[7], sum(values)


class RunWatch:
    """Load average and hypervisor steal between start() and stop()."""

    def start(self):
        self.load_start = load_average()
        self.ticks_start = cpu_ticks()

    def stop(self):
        self.load_end = load_average()
        self.ticks_end = cpu_ticks()

    def steal_percent(self):
        if self.ticks_start is None or self.ticks_end is None:
            return None
        total = self.ticks_end[1] - self.ticks_start[1]
        steal = self.ticks_end[0] - self.ticks_start[0]
        return 100.0 * steal / total if total > 0 else None


def describe(watch):
    """One line naming the machine and how busy it was during the run."""
    model, flags = _cpuinfo()
    amx = [f for f in ("amx_tile", "amx_int8", "amx_bf16") if f in flags]

    def has(flag):
        return "yes" if flag in flags else "no"

    def load(value):
        return "unknown" if value is None else f"{value:.2f}"

    steal = watch.steal_percent()
    return (
        f"machine: {model}, {os.cpu_count()} hardware threads; avx2 {has('avx2')}, "
        f"avx512f {has('avx512f')}, avx512_vnni {has('avx512_vnni')}, "
        f"avx512_bf16 {has('avx512_bf16')}, amx {' '.join(amx) if amx else 'no'}; "
        f"load average {load(watch.load_start)} at start, {load(watch.load_end)} at end; "
        f"steal {'unknown' if steal is None else f'{steal:.1f} %'} of CPU time over the run"
    )
