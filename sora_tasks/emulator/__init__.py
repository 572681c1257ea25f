"""A local server that speaks OpenAI's Videos API (Sora 2 / Sora 2 Pro).

It renders real H.264 MP4s, follows the job lifecycle, validates like the hosted
service and injects faults on demand. It is the default backend of `sora-video`
when no API key is set, and the server every test talks to.
"""

from .faults import FaultPlan
from .server import EmulatorServer, run_emulator, start_emulator
from .state import EmulatorConfig, EmulatorState

__all__ = ["EmulatorConfig", "EmulatorServer", "EmulatorState", "FaultPlan", "run_emulator", "start_emulator"]
