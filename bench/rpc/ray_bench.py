"""Ray side of the comparison (the original's rpc_bench_ray.py): an actor ``echo(data)
-> data`` (a Ray actor always runs in its own worker process, so this is
cross-process); each sample is ``ray.get(actor.echo.remote(data))``."""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

try:
    import ray
except ImportError:
    print("ray is not installed: pip install ray (bench/rpc/run.sh does it in its venv)", file=sys.stderr)
    sys.exit(3)


@ray.remote
class Echo:
    def echo(self, data):
        return data


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--max-size-mb", type=int, default=64)
    p.add_argument("--out", default=os.path.join(common.RESULTS, "ray_rpc.csv"))
    args = p.parse_args()
    ray.init(address="local", include_dashboard=False, ignore_reinit_error=True, num_cpus=2,
             log_to_driver=False)
    try:
        a = Echo.remote()
        ray.get(a.echo.remote(b""))
        pid_check = ray.get(a.__ray_call__.remote(lambda self: os.getpid()))
        assert pid_check != os.getpid(), "the Ray actor must run in another process"
        rows = []
        common.print_header(f"Ray actor (actor pid {pid_check}, driver pid {os.getpid()})")
        for size in common.sizes(args.max_size_mb):
            data = bytes(size)

            def call():
                r = ray.get(a.echo.remote(data))
                if len(r) != size:
                    raise RuntimeError("short echo")

            r = common.measure(size, call)
            common.print_row(r)
            rows.append(r)
        common.write_csv(args.out, rows)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
