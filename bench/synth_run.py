"""Write a synthetic burst run folder: N orders over S suppliers, in the event shapes a
real burst writes (``order_planned`` .. ``order_final``, ``code_checked``, callbacks,
errors and slips), one shard per worker plus the master's ``events.jsonl``.

    .venv/bin/python bench/synth_run.py --orders 1000000 --suppliers 10 --out /tmp/run1m

Every order: planned, one POST attempt, accepted, observed (post), 2 callbacks received,
observed (callback), final, code checked: about 9 lines, ~1.9 KB per order. Every 50th
order draws a 503 and a re-POST; every 97th is refused (409 out of stock, never accepted);
every 200th slips; latencies grow over the run for the odd suppliers, so the
latency-growth bootstrap has work to do. Reproducible from ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path


def write_run(out: Path, orders: int, suppliers: int, workers: int = 2, rate_per_s: float = 300.0,
              seed: int = 1) -> Path:
    """Write the run folder ``out`` (created) and return it."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"sup{i:02d}" for i in range(suppliers)]
    t0 = 1_790_000_000.0
    duration_s = orders / rate_per_s
    seconds = int(duration_s) + 1
    per_second = {n: [0] * seconds for n in names}
    prefix = "bsynth01"
    shards = [(out / f"events-w{w}.jsonl").open("w", encoding="utf-8") for w in range(workers)]
    buffers: list[list[tuple[float, str]]] = [[] for _ in range(workers)]

    def flush(w: int, upto: float) -> None:
        buf = buffers[w]
        buf.sort(key=lambda x: x[0])
        keep = [x for x in buf if x[0] > upto]
        shards[w].write("".join(line for t, line in buf if t <= upto))
        buffers[w] = keep

    for i in range(orders):
        w = i % workers
        sup = names[i % suppliers]
        s_idx = i % suppliers
        intended = t0 + i / rate_per_s
        sec = int(intended - t0)
        per_second[sup][sec] += 1
        cid = f"{prefix}-{sup}-{i:07d}"
        key = f'"supplier":"{sup}","client_order_id":"{cid}"'
        frac = i / orders
        base = 0.004 + 0.002 * s_idx / suppliers
        growth = 1 + (2.0 * frac if s_idx % 2 else 0.2 * frac)
        lat = base * growth * (1 + rng.expovariate(1.0) * 0.3)
        start = intended + (0.12 if i % 200 == 0 else 0.0003)
        price = f"{9 + s_idx * 0.05:.2f}"
        ev: list[tuple[float, str]] = []
        ev.append((start - 0.0001, f'{{"t":{start - 0.0001!r},"type":"order_planned",{key},'
                   f'"mode":"burst","worker":"w{w}","sku":"card-10","quantity":1,'
                   f'"intended_at":{intended!r},"deadline_s":2.0,"listed_price":"{price}",'
                   f'"sale_price":"10.50","face_value":"10.00","started_at":{start!r},'
                   f'"phase":"hold","index":{i}}}\n'))
        if i % 200 == 0:
            ev.append((start, f'{{"t":{start!r},"type":"schedule_slip",{key},"intended_at":'
                       f'{intended!r},"started_at":{start!r},"slip_ms":120.0}}\n'))
        t = start
        ev.append((t, f'{{"t":{t!r},"type":"order_attempt",{key},"attempt":1,"method":"POST",'
                   f'"purpose":"place"}}\n'))
        if i % 97 == 0:
            t += lat
            ev.append((t, f'{{"t":{t!r},"type":"order_error",{key},"kind":"http_409_out_of_stock",'
                       f'"status":409,"phase":"place"}}\n'))
            t += 0.0001
            ev.append((t, f'{{"t":{t!r},"type":"order_final",{key},"state":"failed",'
                       f'"last_state":"unknown","amount":"0","unit_price":null,"codes_delivered":0,'
                       f'"delivered_at":null,"failure_reason":null,"delivered_seen_at":null,'
                       f'"within_deadline":false,"skipped":null,"accepted":false,'
                       f'"resolution":"refused:http_409_out_of_stock","interrupted":null}}\n'))
            buffers[w].extend(ev)
            continue
        if i % 50 == 0:
            t += lat
            ev.append((t, f'{{"t":{t!r},"type":"order_error",{key},"kind":"http_503",'
                       f'"status":503,"phase":"place"}}\n'))
            t += 0.0002
            ev.append((t, f'{{"t":{t!r},"type":"order_attempt",{key},"attempt":2,'
                       f'"method":"POST","purpose":"repost"}}\n'))
        t += lat
        ev.append((t, f'{{"t":{t!r},"type":"order_accepted",{key},"supplier_order_id":'
                   f'"S{s_idx:02d}{i:09d}","status":201,"state":"submitted","unit_price":"{price}",'
                   f'"amount":"{price}","via":"post","answered_at":{t - 0.0004!r}}}\n'))
        ev.append((t + 0.0001, f'{{"t":{t + 0.0001!r},"type":"order_observed",{key},'
                   f'"state":"submitted","updated_at":"2026-11-27T01:53:08.019000+00:00",'
                   f'"source":"post"}}\n'))
        td = t + 0.05 + rng.random() * 0.02
        for n in range(2):
            ev.append((td + n * 0.001, f'{{"t":{td + n * 0.001!r},"type":"callback_received",'
                       f'{key},"verdict":"{"accepted" if n == 0 else "stale"}"}}\n'))
        ev.append((td + 0.0002, f'{{"t":{td + 0.0002!r},"type":"order_observed",{key},'
                   f'"state":"success","updated_at":"2026-11-27T01:53:08.124000+00:00",'
                   f'"source":"callback"}}\n'))
        tf = td + 0.0003
        ev.append((tf, f'{{"t":{tf!r},"type":"order_final",{key},"state":"success",'
                   f'"last_state":"success","amount":"{price}","unit_price":"{price}",'
                   f'"codes_delivered":1,"delivered_at":"2026-11-27T01:53:08.124000+00:00",'
                   f'"failure_reason":null,"delivered_seen_at":{td!r},"within_deadline":true,'
                   f'"skipped":null,"accepted":true,"resolution":null,"interrupted":null}}\n'))
        tc = tf + 1.0
        code_hash = f"{rng.getrandbits(128):032x}"
        ev.append((tc, f'{{"t":{tc!r},"type":"code_checked",{key},"sku":"card-10","mode":"burst",'
                   f'"code_hash":"{code_hash}","serial_masked":"***-****-****-{i % 10000:04d}",'
                   f'"claimed_face_value":"10.00","expected_face_value":"10.00",'
                   f'"issuer_face_value":null,"expires_at":"2027-11-27T01:53:08.124000+00:00",'
                   f'"pattern_ok":true,"duplicate_of":null,"face_value_ok":true,'
                   f'"expiry_ok":true,"issuer_status":"unchecked","verdict":"valid"}}\n'))
        buffers[w].extend(ev)
        if i % 20000 == 19999:
            for k in range(workers):
                flush(k, intended - 5.0)
    for k in range(workers):
        flush(k, float("inf"))
        shards[k].close()
    t_end = t0 + duration_s + 3.0
    with (out / "events.jsonl").open("w", encoding="utf-8") as master:
        master.write(json.dumps({"t": t0 - 1, "type": "burst_started", "t0": t0,
                                 "workers": workers, "scheduled_per_second": per_second},
                                separators=(",", ":")) + "\n")
        for n in names:
            master.write(json.dumps({"t": t0 - 0.5, "type": "balance_read", "supplier": n,
                                     "phase": "before", "balance": "10000000.00"},
                                    separators=(",", ":")) + "\n")
        for n in names:
            master.write(json.dumps({"t": t_end - 1, "type": "balance_read", "supplier": n,
                                     "phase": "after_orders", "balance": "9000000.00"},
                                    separators=(",", ":")) + "\n")
        master.write(json.dumps({"t": t_end, "type": "burst_finished"},
                                separators=(",", ":")) + "\n")
    scenario = {"name": "synthetic", "suppliers": [
        {"name": n, "fees": {"platform_pct": "0", "fixed_per_order": "0", "topup_pct": "0",
                             "withdrawal_pct": "0"}} for n in names]}
    (out / "manifest.json").write_text(json.dumps({
        "run_id": out.name, "mode": "burst", "scenario": scenario, "synthetic": True,
        "written_at": time.time()}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--suppliers", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    write_run(args.out, args.orders, args.suppliers, args.workers, seed=args.seed)
    size = sum(p.stat().st_size for p in args.out.glob("events*.jsonl"))
    print(json.dumps({"orders": args.orders, "bytes": size,
                      "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
