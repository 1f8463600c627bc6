"""Two real engines behind two gateway processes: adapter affinity (the same engine whichever gateway routes),
bounded-load spill, an engine killed mid-traffic, rejoin."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.engine import LocalEngine
from gateway.engine.routing import home
from tests.conftest import ARTIFACTS
from tests.support.processes import GatewayProcess
from tests.support.sql import Sql

CHAT = [{"role": "user", "content": "hi"}]


@dataclass(frozen=True)
class Url:
    url: str
    in_flight: int = 0


@dataclass(frozen=True)
class Result:
    status: int
    request_id: str | None
    sent_at: float


class Pool:
    """The gateways under test (calls alternate between them), their admin APIs, and the two engines."""

    def __init__(self, gws: list[GatewayProcess], admin_token: str, engines: list[LocalEngine]) -> None:
        self.gws = gws
        self.admins = [
            httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60) for gw in gws
        ]
        self.admin = self.admins[0]
        self.engines = engines
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._turn = itertools.cycle(gws)

    def engine_states(self, admin: httpx.Client | None = None) -> dict[str, dict[str, Any]]:
        r = (admin or self.admin).get("/admin/engines")
        assert r.status_code == 200, r.text
        return {e["url"]: e for e in r.json()["data"]}

    def wait_healthy(self, url: str, healthy: bool, timeout_s: float) -> dict[str, Any]:
        """Wait until every gateway sees the engine so; the first gateway's view of it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = [self.engine_states(a)[url] for a in self.admins]
            if all(state["healthy"] is healthy for state in states):
                return states[0]
            time.sleep(0.1)
        raise AssertionError(f"{url} not healthy={healthy} after {timeout_s}s: {self.engine_states()[url]}")

    def gateway_metric(self, family: str, **labels: str) -> dict[str, float]:
        """A gateway counter or gauge by engine label, summed over the gateways."""
        out: dict[str, float] = Counter()
        for gw in self.gws:
            text = httpx.get(f"{gw.metrics_url}/metrics").text
            for f in text_string_to_metric_families(text):
                if f.name == family:
                    for s in f.samples:
                        if s.name.endswith("_created") or any(s.labels.get(k) != v for k, v in labels.items()):
                            continue
                        out[s.labels.get("engine", "")] += s.value
        return dict(out)

    def routed(self) -> dict[str, float]:
        return self.gateway_metric("gateway_engine_requests_routed")

    def engine_finished(self) -> dict[str, float]:
        """Each engine's own count of finished requests (the ground truth for where calls went)."""
        out = {}
        for eng in self.engines:
            text = httpx.get(f"{eng.url}/metrics").text
            out[eng.url] = sum(
                s.value
                for f in text_string_to_metric_families(text)
                if f.name == "vllm:request_success"
                for s in f.samples
                if s.name == "vllm:request_success_total"
            )
        return out

    def ask(self, key: str, model: str, stream: bool = False, max_tokens: int = 3) -> Result:
        sent = time.monotonic()
        body = {"model": model, "messages": CHAT, "max_tokens": max_tokens, "stream": stream}
        with self._lock:
            gw = next(self._turn)
        try:
            with httpx.stream(
                "POST", f"{gw.url}/v1/chat/completions", json=body, timeout=120,
                headers={"Authorization": f"Bearer {key}"},
            ) as r:  # fmt: skip
                r.read()
                result = Result(r.status_code, r.headers.get("x-request-id"), sent)
        except httpx.TransportError:
            result = Result(0, None, sent)
        with self._lock:
            self.results.append(result)
        return result


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before) if after.get(k, 0) != before.get(k, 0)
    }


LOAD_FLOOR = 3  # low, so that one burst shows the spill


@pytest.fixture
def pool(
    gateway_env: dict[str, str], engine: LocalEngine, second_engine: LocalEngine, admin_token: str
) -> Iterator[Pool]:
    env = {
        **gateway_env,
        "ENGINE_URLS": f"{engine.url},{second_engine.url}",
        "ENGINE_HEALTH_INTERVAL": "1",
        "ENGINE_LOAD_FLOOR": str(LOAD_FLOOR),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    gws = [GatewayProcess(env, ARTIFACTS / f"gateway-pool-{i}.log") for i in (1, 2)]
    try:
        for gw in gws:
            gw.start(timeout_s=120)
        p = Pool(gws, admin_token, [engine, second_engine])
        for eng in p.engines:
            p.wait_healthy(eng.url, True, 60)
        yield p
        for a in p.admins:
            a.close()
    finally:
        for gw in gws:
            gw.stop()


def test_two_engines_affinity_spill_failover_and_rejoin(
    pool: Pool, engine: LocalEngine, second_engine: LocalEngine, models_dir: Path, sql: Sql
) -> None:
    urls = [engine.url, second_engine.url]
    t = pool.admin.post("/admin/tenants", json={"name": f"pool-{secrets.token_hex(4)}"})
    assert t.status_code == 201, t.text
    tenant = t.json()["id"]
    k = pool.admin.post(f"/admin/tenants/{tenant}/keys", json={"name": "pool"})
    key = k.json()["key"]
    names: dict[str, str] = {}  # name → deployment id
    for i in range(10):
        folder = models_dir / "adapters" / f"lora-{i % 6 + 1}"
        r = pool.admin.post(f"/admin/tenants/{tenant}/adapters", json={"name": f"p{i}", "path": str(folder)})
        assert r.status_code == 201 and r.json()["status"] == "ready", r.text
        names[f"p{i}"] = r.json()["id"]
    nodes = [Url(u) for u in urls]
    homes = {name: getattr(home(dep, nodes), "url", None) for name, dep in names.items()}
    assert set(homes.values()) == set(urls), homes  # 10 adapters over 2 engines: both get some (p ≈ 1 - 2/1024)
    states = pool.engine_states()
    for name, dep in names.items():  # a new deployment is loaded where its traffic will go
        assert dep in states[homes[name]]["adapters"]

    # 1. Affinity: each adapter's requests (2 at a time, under the load floor) all land on its rendezvous engine.
    finished_before = pool.engine_finished()
    placed: dict[str, dict[str, float]] = {}
    with ThreadPoolExecutor(2) as ex:
        for name in names:
            before = pool.routed()
            assert all(r.status == 200 for r in ex.map(pool.ask, [key] * 4, [name] * 4))
            placed[name] = delta(pool.routed(), before)
    for name, where in placed.items():
        assert where == {homes[name]: 4}, (name, where)
    by_engine: Counter[str] = Counter()
    for where in placed.values():
        by_engine.update(where)
    settle = time.monotonic() + 10  # the engines' counters may lag their answers a little
    while delta(pool.engine_finished(), finished_before) != dict(by_engine) and time.monotonic() < settle:
        time.sleep(0.2)
    assert delta(pool.engine_finished(), finished_before) == dict(by_engine)  # the engines agree

    # 2. Bounded load: a burst for one adapter spills past its engine's bound to the other engine.
    hot = "p0"
    other = next(u for u in urls if u != homes[hot])
    before = pool.routed()
    with ThreadPoolExecutor(24) as ex:  # split over the two gateways: each sees up to 12 at once
        assert all(r.status == 200 for r in ex.map(lambda _: pool.ask(key, hot, max_tokens=256), range(24)))
    burst = delta(pool.routed(), before)
    # How many each engine gets over a burst depends on how long its answers take (the busier one finishes later
    # and so takes fewer): the bound's arithmetic is tests/unit/test_routing.py's. Here: it spilled, and the
    # home engine took at least its floor first.
    assert burst.get(homes[hot], 0) >= LOAD_FLOOR and burst.get(other, 0) > 0, burst
    assert names[hot] in pool.engine_states()[other]["adapters"]  # loaded there on demand

    # 3. Kill one engine mid-traffic: nothing accepted is lost, the rest goes to the survivor.
    victim, survivor = second_engine, engine
    victim_adapters = {n for n in names if homes[n] == victim.url}
    stop = threading.Event()

    def traffic(worker: int) -> None:
        i = worker
        while not stop.is_set():
            pool.ask(key, f"p{i % 10}", stream=i % 3 == 0)
            i += 4

    with ThreadPoolExecutor(4) as ex:
        workers = [ex.submit(traffic, w) for w in range(4)]
        time.sleep(2)
        deadline = time.monotonic() + 10  # kill it while it has calls in flight (best effort: they are short)
        while not pool.engine_states()[victim.url]["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.02)
        killed_at = time.monotonic()
        victim.kill()
        pool.wait_healthy(victim.url, False, 15)  # taken out within seconds (1 s checks; the machine can stall)
        down_at = time.monotonic()
        routed_at_down = pool.routed()
        time.sleep(6)
        stop.set()
        for w in workers:
            w.result()
    after_kill = [r for r in pool.results if r.sent_at > killed_at]
    print("statuses after the kill:", Counter(r.status for r in after_kill), "down after", down_at - killed_at, "s")
    assert {r.status for r in pool.results} <= {200, 503}, Counter(r.status for r in pool.results)
    later = [r for r in after_kill if r.sent_at > down_at]
    assert len(later) >= 8 and all(r.status == 200 for r in later), Counter(r.status for r in later)
    moved = delta(pool.routed(), routed_at_down)
    assert set(moved) == {survivor.url}, moved  # the dead engine's adapters now run on the survivor

    # 4. The engine comes back: it holds its adapters before it is healthy again, then takes their traffic.
    victim.start()
    victim.wait_ready(progress=False)
    state = pool.wait_healthy(victim.url, True, 60)
    on_engine = {m["id"] for m in httpx.get(f"{victim.url}/v1/models").json()["data"]}
    expected = {names[n] for n in victim_adapters} | {names[hot]}  # its own, and the one it served by spilling
    assert expected <= set(state["adapters"]), state
    assert expected <= on_engine, (expected, on_engine)
    loads_before = pool.gateway_metric("gateway_adapter_loads", result="loaded")
    before = pool.routed()
    for name in sorted(victim_adapters):
        assert pool.ask(key, name).status == 200
    assert delta(pool.routed(), before) == {victim.url: len(victim_adapters)}
    assert pool.gateway_metric("gateway_adapter_loads", result="loaded") == loads_before  # no load on demand

    # Every 200 left exactly one usage row; nothing else left any.
    ok = [r.request_id for r in pool.results if r.status == 200]
    assert len(ok) == len(set(ok)) and None not in ok
    rows = sql.fetch("SELECT request_id FROM usage_records WHERE tenant_id = $1", tenant)
    assert sorted(r["request_id"] for r in rows) == sorted(ok)
