"""amm.testing: the test tools (simulator, OTLP receiver) under one name that says so."""

import subprocess
import sys

import amm.testing
from amm.sim import ModelProfile, Simulator
from telemetry.receiver import OTLPReceiver


def test_amm_testing_re_exports_the_simulator_and_the_otlp_receiver():
    assert amm.testing.Simulator is Simulator
    assert amm.testing.ModelProfile is ModelProfile
    assert amm.testing.OTLPReceiver is OTLPReceiver
    assert sorted(amm.testing.__all__) == dir(amm.testing)
    for name in amm.testing.__all__:
        assert getattr(amm.testing, name) is not None


def test_importing_amm_testing_starts_nothing_and_loads_no_server_library():
    code = ("import sys, amm.testing; "
            "print(any(m in sys.modules for m in ('aiohttp', 'grpc', 'litellm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
