"""
What every entry point sets before torch loads, and the record of the machine a number came from.

Each script imports this module before torch (`import system  # first: ...`):
OMP_WAIT_POLICY=PASSIVE, unless the environment says otherwise (e.g. OMP_WAIT_POLICY=ACTIVE is kept).
libgomp's default spin-waiting makes every parallel op cost ~8 ms while another job holds a core (a
288x384 LayerNorm: 7.7 ms instead of 0.07 ms; training steps 8x slower at load 2 on 2 cores);
sleeping workers avoid that, at a cost on a quiet machine (spinning is ~25% faster on the tiny
config). It is read once, when torch loads OpenMP, so it must be set before.
"""
import os
import platform
from pathlib import Path

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')


def machine(device='cpu'):
    """{'cpu', 'threads', 'omp_wait_policy', 'torch', 'device'}: what training and evaluation numbers
    depend on beyond the seed. Training is bit-reproducible only at the same thread count and CPU
    kind (the CPU matmul kernels sum in a thread-dependent order), so logs and results record it."""
    import torch
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path('/proc/cpuinfo')
    if cpuinfo.is_file():
        cpu = next((line.split(':', 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith('model name')), cpu)
    device = str(device)
    return {'cpu': cpu, 'threads': torch.get_num_threads(), 'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY'),
            'torch': str(torch.__version__),  # a TorchVersion would not load with weights_only
            'device': torch.cuda.get_device_name(device) if device.startswith('cuda') else device}
