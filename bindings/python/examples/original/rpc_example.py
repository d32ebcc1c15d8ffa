#!/usr/bin/env python3
"""SlimeRPC loopback: two PeerAgents in one process, a typed service.

Needs a NanoCtrl (and the Redis it points at):

    python rpc_example.py --ctrl http://127.0.0.1:3000
"""

import argparse
import threading

from dlslime import PeerAgent
from dlslime.rpc import method, proxy, serve


class CalcService:
    @method
    def add(self, a: int, b: int) -> int:
        return a + b

    @method
    def mul(self, a: float, b: float) -> float:
        return a * b

    @method
    def echo(self, msg: str) -> str:
        return f"echo: {msg}"


def main(ctrl_url: str):
    worker = PeerAgent(ctrl_url=ctrl_url, alias="worker:0")
    driver = PeerAgent(ctrl_url=ctrl_url, alias="driver:0")

    to_worker = driver.connect_to("worker:0", ib_port=1, qp_num=1)
    to_driver = worker.connect_to("driver:0", ib_port=1, qp_num=1)
    to_worker.wait()
    to_driver.wait()
    print("Connected.")

    try:
        # serve() blocks: give it a daemon thread
        threading.Thread(target=serve, args=(worker, CalcService(), "driver:0"), daemon=True).start()

        calc = proxy(driver, "worker:0", CalcService)

        assert calc.add(1, 2).wait() == 3
        print("add(1, 2) = 3  ✓")

        assert abs(calc.mul(3.14, 2.0).wait() - 6.28) < 1e-6
        print("mul(3.14, 2.0) = 6.28  ✓")

        assert calc.echo("hello").wait() == "echo: hello"
        print("echo('hello')  ✓")

        sums = [calc.add(i, i * 10).wait() for i in range(5)]
        assert sums == [0, 11, 22, 33, 44]
        print(f"batch add = {sums}  ✓")

        print("\nAll tests passed!")
    finally:
        worker.shutdown()
        driver.shutdown()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="SlimeRPC loopback")
    ap.add_argument("--ctrl", default="http://127.0.0.1:3000", help="NanoCtrl URL")
    main(ap.parse_args().ctrl)
