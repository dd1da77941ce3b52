import os
import sys

# tests import their small helper envs (cue_env) by module name
sys.path.insert(0, os.path.dirname(__file__))
