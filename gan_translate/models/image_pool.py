"""History of generated images for the discriminator (Shrivastava et al. 2017, "Learning from Simulated and
Unsupervised Images through Adversarial Training"; used by CycleGAN, Zhu et al. 2017).

Showing D a mix of current and past fakes keeps it from forgetting earlier generator modes and damps oscillation.
Random choices come from the pool's own ``torch.Generator`` and its state is saved with the pool, so a resumed run
returns exactly what an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["ImagePool"]


class ImagePool:
    """Buffer of up to ``pool_size`` past fakes.

    ``query(images)`` goes image by image: while the pool is filling, each image is stored and returned; once full,
    with probability 0.5 a random stored image is returned and the new one takes its slot, otherwise the new one is
    returned. ``pool_size == 0`` disables the pool (the input comes back unchanged).

    Args:
        pool_size: capacity (CycleGAN: 50).
        generator: source of the random choices; seed it for reproducible runs. When None, the pool makes its own,
            seeded from torch's global generator (so ``torch.manual_seed`` still fixes it).
    """

    def __init__(self, pool_size: int, generator: torch.Generator | None = None):
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        self.pool_size = pool_size
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self.generator = generator
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator, device=self.generator.device))

    def _index(self) -> int:
        return int(torch.randint(0, self.pool_size, (), generator=self.generator, device=self.generator.device))

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch shaped like ``images`` (N, C, H, W), mixing in stored fakes; the result is detached.

        Fakes fed to D are detached anyway (D's step must not reach G), so the pool keeps no graphs.
        """
        if self.pool_size == 0:
            return images
        if self.images and (self.images[0].device, self.images[0].dtype) != (images.device, images.dtype):
            # e.g. a pool restored on the CPU from a checkpoint, or fakes now produced under mixed precision
            self.images = [img.to(device=images.device, dtype=images.dtype) for img in self.images]
        returned = []
        for image in images.detach():
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                returned.append(image)
            elif self._uniform() > 0.5:
                slot = self._index()
                returned.append(self.images[slot])
                self.images[slot] = image.clone()
            else:
                returned.append(image)
        return torch.stack(returned)

    def state_dict(self) -> dict[str, Any]:
        """Stored images (stacked when they share a shape, else a list), the capacity and the generator state."""
        images: torch.Tensor | list[torch.Tensor]
        if not self.images:
            images = torch.empty(0)
        elif all(img.shape == self.images[0].shape for img in self.images):
            images = torch.stack(self.images)
        else:
            images = list(self.images)
        return {"pool_size": self.pool_size, "images": images, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved; the images move to the device of the next ``query``'s batch."""
        images = list(state["images"].unbind(0) if isinstance(state["images"], torch.Tensor) else state["images"])
        if len(images) > self.pool_size:
            raise ValueError(
                f"the saved image pool holds {len(images)} images but this pool's size is {self.pool_size}"
            )
        self.images = [img.clone() for img in images]
        self.generator.set_state(state["generator"])
