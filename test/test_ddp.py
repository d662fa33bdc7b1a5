"""torchrun with 2 CPU processes (gloo): both ranks must end with identical weights."""

import os
import socket
import subprocess
import sys

import torch

from conftest import REPO, SAMPLE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_ranks_agree(tmp_path):
    lines = (SAMPLE / "index.tsv").read_text().splitlines()
    train_list = SAMPLE / f".ddp_{os.getpid()}.tsv"
    train_list.write_text("\n".join(x for x in lines if "not_for_training" not in x) + "\n")
    try:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
               "-m", "training.train", "--train-list", str(train_list), "--val-drives",
               "2011_09_26_drive_0005",  # hold out one drive, train the 3 drive-0001 frames
               "--test-scenes", str(SAMPLE / "splits/sfmlearner/test_scenes.txt"),
               "--model-height", "64", "--model-width", "192", "--batch-size", "1",
               "--coarse-epochs", "2", "--fine-epochs", "1", "--val-every", "0",
               "--threads", "1", "--no-pretrained", "--out-dir", str(tmp_path),
               "--dump-rank-weights"]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    finally:
        train_list.unlink()
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "weights_rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights_rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # and training really happened: the fine head moved away from its zero initialisation
    assert w0["fine.out.weight"].abs().sum() > 0
