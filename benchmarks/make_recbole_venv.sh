#!/usr/bin/env bash
# Build the separate environment RecBole 1.2.1 needs (it predates numpy 2 and pandas 2.2).
# Usage: benchmarks/make_recbole_venv.sh [VENV_DIR]   (default .venv-recbole in the repository root)
set -euo pipefail
VENV="${1:-.venv-recbole}"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q torch==2.13.0   # first, so nothing below pulls another torch
"$VENV/bin/pip" install -q "numpy<2" "scipy<1.13" "pandas<2.2" psutil "pyarrow<15" click pyyaml tqdm recbole==1.2.1 \
    colorlog colorama tensorboard texttable thop tabulate plotly "ray<3" hyperopt
"$VENV/bin/python" -c "import recbole, torch, numpy; print('recbole', recbole.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
touch "$VENV/.installed"
