"""Stand-in training processes for the benchmark tests."""

# Stand-ins for the two trainings: a start-up, then `steps` steps of a fixed length, each side reporting its
# steps the way the real one does (ours: time/step_s in its metrics CSV; the example: a tqdm "Steps" bar).
FAKE_OURS = """
import csv, pathlib, sys, time
steps, per, out = int(sys.argv[1]), float(sys.argv[2]), pathlib.Path(sys.argv[3])
time.sleep(0.3)
rows, last = [], time.perf_counter()
for step in range(steps):
    time.sleep(per)
    now = time.perf_counter()
    rows.append({"step": step, "time/step_s": now - last})
    last = now
(out / "run1" / "csv").mkdir(parents=True)
with open(out / "run1" / "csv" / "metrics.csv", "w", newline="") as fh:
    w = csv.DictWriter(fh, ["step", "time/step_s"])
    w.writeheader()
    w.writerows(rows)
"""
FAKE_EXAMPLE = """
import sys, time
from tqdm.auto import tqdm
steps, per = int(sys.argv[1]), float(sys.argv[2])
time.sleep(0.3)
bar = tqdm(range(steps), desc="Steps")
for _ in range(steps):
    time.sleep(per)
    bar.update(1)
    bar.set_postfix(loss=0.1)
"""
