import sys
from pathlib import Path

# `from bench...` imports resolve against the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
