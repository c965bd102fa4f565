"""Benchmark: uplink traffic of the demo plant with report by exception off and on.

    .venv/bin/python -m bench.report_run [--hours 1] [--config site.yaml]
                                         [--live-seconds 0]

1. An hour of the demo plant (the shipped demo site) on a virtual clock: each device's
   simulator (the same seeded physics `edge-agent demo` serves) answers the device's real
   read plan through the Modbus driver, at the device's own interval; every poll goes
   through the report filter and the data message encoder, as in the agent. Settings:
     off        every poll, every point (contract v1, as shipped)
     typical    `report: {deadband_pct: 0.5, min_interval_s: 10, max_interval_s: 300}`
                on every device: a value goes up when it moved 0.5 % from the last one
                sent, at most every 10 s (a quality change at once), at least every 5 min
     (deadband-only and 30 s rows show where the saving comes from)
     batches    `batch: {max_polls: 60}` too: a minute of polls per v2 message (the
                60 s age limit needs a real clock: it is on in the live run only)
   Energy counters (marked `energy:` in the profiles, or in kWh/kvarh) go up on every
   change whatever the deadband: the filter guards them.
2. With --live-seconds N: the same plant for N real seconds with its simulators, the agent
   and a real Mosquitto, off and on, counting what a subscriber receives; the rate per
   hour it gives checks the virtual hour (whose first minutes carry no heartbeats).

Bytes: "payload" is the JSON; "MQTT" adds each PUBLISH packet's header and topic and its
4-byte PUBACK (QoS 1); TCP/IP and TLS overhead come on top and depend on the link.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drivers.modbus.codec import Table
from drivers.modbus.config import ModbusDevice
from drivers.modbus.driver import ModbusDriver
from drivers.options.report import BatchOptions, ReportOptions
from drivers.reading import Poll
from edge_agent.catalog import shipped_demo
from edge_agent.config.site import DeviceSetup, LoadedConfig, load_config
from edge_agent.pipeline.batching import build_batcher
from edge_agent.pipeline.by_exception import build_report_filter
from edge_agent.pipeline.payload import DeviceEncoder
from simulators.modbus.device import SimDevice

ROOT = Path(__file__).resolve().parents[1]
T0_NS = 1_764_000_000 * 10**9
_TYPICAL = ReportOptions(deadband_pct=0.5, min_interval_s=10, max_interval_s=300)
# Batches of 60 polls (a minute at 1 s polls); the age limit needs a live clock, so the
# virtual hour leaves it out (batches also close on a quality change and at the end).
_BATCH = BatchOptions(max_polls=60, max_age_s=3600, max_bytes=65536)
_BATCH_LIVE = BatchOptions(max_polls=60, max_age_s=60, max_bytes=65536)
Setting = tuple[ReportOptions | None, BatchOptions | None]
SETTINGS: dict[str, Setting] = {
    "off": (None, None),
    "deadband 0.5 %": (ReportOptions(deadband_pct=0.5, max_interval_s=300), None),
    "deadband 2 %": (ReportOptions(deadband_pct=2.0, max_interval_s=300), None),
    "typical: 0.5 %, min 10 s": (_TYPICAL, None),
    "0.5 %, min 30 s": (
        ReportOptions(deadband_pct=0.5, min_interval_s=30, max_interval_s=300),
        None,
    ),
    "typical + batches of 60 polls (v2)": (_TYPICAL, _BATCH),
    "off + batches of 60 polls (v2)": (None, _BATCH),
}
TYPICAL = "typical: 0.5 %, min 10 s"
BATCHED = "typical + batches of 60 polls (v2)"
_READ = struct.Struct(">BHH")


def mqtt_bytes(topic: str, payload_len: int) -> int:
    """A QoS 1 PUBLISH packet with its PUBACK, in bytes."""
    remaining = 2 + len(topic.encode()) + 2 + payload_len
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + length_bytes + remaining + 4


def modbus_only(loaded: LoadedConfig) -> LoadedConfig:
    """The site's Modbus devices (the ones the Modbus simulators serve)."""
    setups = tuple(s for s in loaded.devices if isinstance(s.device, ModbusDevice))
    site = loaded.site.model_copy(update={"devices": tuple(s.device for s in setups)})
    return LoadedConfig(loaded.path, site, setups)


def with_settings(
    loaded: LoadedConfig, report: ReportOptions | None, batch: BatchOptions | None = None
) -> LoadedConfig:
    """The site with `report` and `batch` on every device (profiles as shipped)."""
    setups = []
    for setup in loaded.devices:
        assert isinstance(setup.device, ModbusDevice)
        device = setup.device.model_copy(update={"report": report, "batch": batch})
        setups.append(DeviceSetup(device, setup.profile, setup.profile_name))
    return LoadedConfig(loaded.path, loaded.site, tuple(setups))


class MemoryConnection:
    """A Modbus line answered in process by a simulated device (no sockets, no waiting)."""

    connected = True

    def __init__(self, device: SimDevice) -> None:
        self.device = device

    async def connect(self) -> None:
        pass

    async def read(
        self, table: Table, start: int, count: int, *, device_id: int
    ) -> bytes | list[bool] | int:
        answer = self.device.respond(_READ.pack(table.function_code, start, count))
        if answer[0] & 0x80:
            return answer[1]
        data = answer[2:]
        if table.is_bits:
            return [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]
        return data

    def close(self) -> None:
        pass


@dataclass
class Traffic:
    """What one device sent up."""

    polls: int = 0
    readings: int = 0
    messages: int = 0
    readings_sent: int = 0
    payload: int = 0
    mqtt: int = 0
    per_device: dict[str, Traffic] = field(default_factory=dict)


async def record(loaded: LoadedConfig, *, hours: float) -> dict[str, list[Poll]]:
    """Every poll of every device over `hours` of virtual time (settings do not change it)."""
    out: dict[str, list[Poll]] = {}
    for index, setup in enumerate(loaded.devices):
        device = setup.device
        assert isinstance(device, ModbusDevice) and setup.profile is not None
        clock = [0.0]
        sim = SimDevice(
            device.name,
            setup.profile,
            device_id=device.device_id,
            seed=index + 1,
            clock=lambda c=clock: c[0],  # type: ignore[misc]
        )
        driver = ModbusDriver(device, setup.profile, connection=MemoryConnection(sim))  # type: ignore[arg-type]
        polls = out[device.name] = []
        for k in range(round(hours * 3600 / device.interval_s)):
            t = k * device.interval_s
            clock[0] = t
            poll = await driver.read()
            poll.ts_ns = T0_NS + round(t * 1e9)
            polls.append(poll)
    return out


class _Counter:
    """Takes the batcher's messages in place of the forwarder, counting them."""

    def __init__(self, out: dict[str, Traffic]) -> None:
        self.out = out
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def submit(self, seq: int, topic: str, payload: bytes, *, device: str, readings: int) -> None:
        traffic = self.out[device]
        traffic.messages += 1
        traffic.payload += len(payload)
        traffic.mqtt += mqtt_bytes(topic, len(payload))


async def replay(loaded: LoadedConfig, polls: dict[str, list[Poll]]) -> dict[str, Traffic]:
    """What each device sends up under the site's settings: the agent's filter, encoder and
    batcher (a coroutine only because the batcher arms its age timers on the loop)."""
    site = loaded.site
    uplink = build_report_filter(loaded)
    out: dict[str, Traffic] = {name: Traffic() for name in polls}
    topics = {n: f"{site.mqtt.prefix}/{site.site}/{site.gateway}/{n}/data" for n in polls}
    batcher = build_batcher(loaded, topics=topics, forwarder=_Counter(out))
    for name, device_polls in polls.items():
        encoder = DeviceEncoder(gateway=site.gateway, device=name, points=device_polls[0].points)
        traffic = out[name]
        for poll in device_polls:
            traffic.polls += 1
            traffic.readings += len(poll.values)
            sent: Poll | None = poll if uplink is None else uplink.select(poll)
            if sent is None:
                continue
            traffic.readings_sent += len(sent.values)
            if batcher is not None and batcher.add(sent):
                continue
            payload = encoder.encode(sent, seq=traffic.messages + 1)
            traffic.messages += 1
            traffic.payload += len(payload)
            traffic.mqtt += mqtt_bytes(topics[name], len(payload))
    if batcher is not None:
        batcher.flush()
    return out


def _total(rows: dict[str, Traffic], names: Sequence[str]) -> Traffic:
    total = Traffic()
    for name in names:
        r = rows[name]
        for key in ("polls", "readings", "messages", "readings_sent", "payload", "mqtt"):
            setattr(total, key, getattr(total, key) + getattr(r, key))
    return total


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "-"


def print_virtual(
    results: dict[str, dict[str, Traffic]], loaded: LoadedConfig, hours: float
) -> None:
    """The per-device table (off against typical) and the settings summary."""
    per_h = 1 / hours
    off, on = results["off"], results[TYPICAL]
    meters = [s.device.name for s in loaded.devices if s.profile_name != "test-plc"]
    print(f"\nvirtual {hours:g} h of {loaded.path.name}, per hour; off vs {TYPICAL}\n")
    print(
        "| device | profile | poll s | readings/h | msgs/h off | msgs/h on | payload kB/h off "
        "| payload kB/h on | MQTT kB/h off | MQTT kB/h on | bytes saved |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [(s.device.name, s.profile_name, s.device.interval_s) for s in loaded.devices]
    for name, profile, interval in [
        *rows,
        ("meters", "all four", 1.0),
        ("plant", "all five", None),
    ]:
        names = meters if name == "meters" else [r[0] for r in rows] if name == "plant" else [name]
        a, b = _total(off, names), _total(on, names)
        print(
            f"| {name} | {profile} | {'' if interval is None else f'{interval:g}'} "
            f"| {a.readings * per_h:,.0f} | {a.messages * per_h:,.0f} | {b.messages * per_h:,.0f} "
            f"| {a.payload * per_h / 1000:,.0f} | {b.payload * per_h / 1000:,.0f} "
            f"| {a.mqtt * per_h / 1000:,.0f} | {b.mqtt * per_h / 1000:,.0f} "
            f"| {_ratio(a.mqtt, b.mqtt)} |"
        )
    print("\nby setting, per hour (plant: all five devices; meters: the four at 1 s)\n")
    print(
        "| setting | plant msgs/h | readings sent | plant MQTT MB/h | MB/day | vs off "
        "| meters msgs/h | meters MQTT MB/h | meters vs off |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = _total(off, list(off))
    base_m = _total(off, meters)
    for setting, rows_ in results.items():
        t = _total(rows_, list(rows_))
        m = _total(rows_, meters)
        print(
            f"| {setting} | {t.messages * per_h:,.0f} | {t.readings_sent / t.readings:.1%} "
            f"| {t.mqtt * per_h / 1e6:.2f} | {t.mqtt * per_h * 24 / 1e6:.0f} "
            f"| {_ratio(base.mqtt, t.mqtt)} | {m.messages * per_h:,.0f} "
            f"| {m.mqtt * per_h / 1e6:.2f} | {_ratio(base_m.mqtt, m.mqtt)} |"
        )


def on_free_ports(loaded: LoadedConfig, free_port: Callable[[], int]) -> LoadedConfig:
    """The site with each host:port moved to a free port (devices sharing one still do)."""
    ports: dict[str, int] = {}
    setups = []
    for setup in loaded.devices:
        device = setup.device
        assert isinstance(device, ModbusDevice)
        scheme, _, address = device.url.partition("://")
        port = ports.setdefault(address, free_port())
        device = device.model_copy(update={"url": f"{scheme}://127.0.0.1:{port}"})
        setups.append(DeviceSetup(device, setup.profile, setup.profile_name))
    site = loaded.site.model_copy(update={"devices": tuple(s.device for s in setups)})
    return LoadedConfig(loaded.path, site, tuple(setups))


async def live(config: Path, setting: Setting, seconds: float) -> dict[str, float]:
    """Run the plant for real (simulators, agent, Mosquitto); what a subscriber received."""
    from edge_agent.cli.simulation import specs
    from edge_agent.runtime.agent import Agent
    from simulators.modbus.site import serve
    from tests.fixtures.mosquitto import Mosquitto, Subscriber, free_port

    with tempfile.TemporaryDirectory(prefix="rbe-live-") as tmp:
        broker = Mosquitto(Path(tmp) / "broker")
        broker.start()
        try:
            loaded = on_free_ports(modbus_only(load_config(config)), free_port)
            async with serve(specs(loaded, "modbus")):
                report, batch = setting
                if batch is not None:
                    batch = _BATCH_LIVE
                loaded = with_settings(loaded, report, batch)
                mqtt = loaded.site.mqtt.model_copy(update={"url": broker.url})
                outbox = loaded.site.outbox.model_copy(update={"path": Path(tmp) / "outbox.sqlite"})
                site = loaded.site.model_copy(update={"mqtt": mqtt, "outbox": outbox})
                agent = Agent(LoadedConfig(loaded.path, site, loaded.devices))
                sub = Subscriber(broker.host, broker.port, f"{mqtt.prefix}/#")
                task = asyncio.create_task(agent.run())
                try:
                    await asyncio.sleep(seconds)
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                # Every message the agent sent reaches the subscriber within moments.
                want = sum(e.messages for e in agent.encoders.values())
                if agent.batcher is not None:
                    want += sum(agent.batcher.sent(n)[0] for n in agent.encoders)
                deadline = time.monotonic() + 5
                while True:
                    data = [m for m in sub.messages if m.topic.endswith("/data")]
                    if len(data) >= want or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
                sub.close()
        finally:
            broker.stop()
    per_h = 3600 / seconds
    return {
        "messages_h": len(data) * per_h,
        "payload_kb_h": sum(len(m.payload) for m in data) * per_h / 1000,
        "mqtt_kb_h": sum(mqtt_bytes(m.topic, len(m.payload)) for m in data) * per_h / 1000,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", type=Path, default=shipped_demo())
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--live-seconds", type=float, default=0.0)
    args = p.parse_args(argv)
    loaded = modbus_only(load_config(args.config))
    t = time.perf_counter()
    polls = asyncio.run(record(loaded, hours=args.hours))
    print(f"polled {args.hours:g} virtual h in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    results = {
        setting: asyncio.run(replay(with_settings(loaded, *options), polls))
        for setting, options in SETTINGS.items()
    }
    print_virtual(results, with_settings(loaded, None), args.hours)
    if args.live_seconds:
        print(f"\nlive {args.live_seconds:g} s through Mosquitto, per hour\n")
        print("| setting | msgs/h | payload kB/h | MQTT kB/h |")
        print("|---|---:|---:|---:|")
        for setting in ("off", TYPICAL, BATCHED):
            r = asyncio.run(live(args.config, SETTINGS[setting], args.live_seconds))
            print(
                f"| {setting} | {r['messages_h']:,.0f} | {r['payload_kb_h']:,.0f} "
                f"| {r['mqtt_kb_h']:,.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
