"""In-silico experiments: stimuli optimized through the emulator (pixels -> features -> Vi-ST -> rates) to drive
chosen cells, and checked against a known (simulated) retina."""

from vist_rt.insilico.differentiable import PixelsToRates
from vist_rt.insilico.objectives import OBJECTIVES, Objective, Regularizers
from vist_rt.insilico.optimize import Optimized, Settings, optimize_stimulus

__all__ = ["OBJECTIVES", "Objective", "Optimized", "PixelsToRates", "Regularizers", "Settings", "optimize_stimulus"]
