import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # fake_runner, shared by this folder's tests
