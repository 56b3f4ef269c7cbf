#!/usr/bin/env bash
# Rebuild every table and figure of results/study/ from its tidy rows (issue 15's study).
# Only bench commands and the two row/meta readers in scripts/ are used; nothing is typed in.
#   bash scripts/study_tables.sh
set -euo pipefail
cd "$(dirname "$0")/.."
S=results/study
CSV=$S/runs.csv
# The single-deviation runs (study-deviations.yaml) are left out of the main tables.
DEV=$(bench sweep configs/sweeps/study-deviations.yaml --out $S --dry-run | awk 'NR>1 && length($1) == 12 && $1 ~ /^[0-9a-f]+$/ {print $1}' | paste -sd, -)
MAIN="--where epochs=8 --where craft_bn=eval --where width=0.5 --where run_id!=$DEV"
bench table $CSV $MAIN --layout sparsity --attack pgd20 --output $S/sparsity_pgd20.md
bench table $CSV $MAIN --layout sparsity --attack cw20 --output $S/sparsity_cw20.md
bench table $CSV $MAIN --layout sparsity --attack pgd20 --format csv --output $S/sparsity_pgd20.csv
bench table $CSV $MAIN --where target_sparsity=0.9,0.0 --layout method --attack pgd20 --output $S/methods_pgd20.md
bench table $CSV $MAIN --where target_sparsity=0.9,0.0 --where method=rst,dense-at --where n_eval=200 \
  --layout method --attack autoattack --output $S/methods_autoattack.md
bench table $CSV --where epochs=8 --where craft_bn=eval --where target_sparsity=0.9,0.0 --where method=rst,dense-at \
  --where run_id!=$DEV --where n_eval=1000 --layout width --columns method --attack pgd20 --output $S/width_pgd20.md
bench table $CSV --where epochs=24 --layout method --attack pgd20 --output $S/budget24_pgd20.md
bench table $CSV --where craft_bn=train --layout method --attack pgd20 --output $S/craft_bn_train_pgd20.md
bench plot $CSV $MAIN --where n_eval=1000 --kind sparsity --attacks pgd20,cw20 --out-dir $S/plots
# Ratios (paired by seed) and the validation accuracies settings were chosen on.
R="method=rst,target_sparsity=0.9,width=0.5,craft_bn=eval,hp.linear_bias=False,hp.finetune=none"
D="method=dense-at,width=0.5,craft_bn=eval"
{
  python scripts/ratio_table.py $CSV --attack pgd20 \
    --pair "rst-0.9 / dense-at, equal width=$R,epochs=8|$D,epochs=8" \
    --pair "rst-0.9 / dense-at width 0.16, equal nonzero weights=$R,epochs=8|method=dense-at,width=0.16,epochs=8" \
    --pair "rst-0.9 / dense-at-matched=$R,epochs=8|method=dense-at-matched,width=0.5,epochs=8" \
    --pair "rst-0.9 / random trained (matched)=$R,epochs=8|method=random,target_sparsity=0.9,width=0.5,epochs=8" \
    --pair "hydra-0.9 / dense-at=method=hydra,target_sparsity=0.9,width=0.5,epochs=8|$D,epochs=8" \
    --pair "lwm-0.9 / dense-at=method=lwm,target_sparsity=0.9,width=0.5,epochs=8|$D,epochs=8" \
    --pair "rst-0.9 / dense-at, 24 epochs=$R,epochs=24|$D,epochs=24" \
    --pair "rst-0.9 / dense-at, craft_bn train=method=rst,target_sparsity=0.9,width=0.5,craft_bn=train,epochs=8|method=dense-at,width=0.5,craft_bn=train,epochs=8"
  echo
  python scripts/ratio_table.py $CSV --attack autoattack \
    --pair "rst-0.9 / dense-at, equal width, AutoAttack on 200=$R,epochs=8,n_eval=200|$D,epochs=8,n_eval=200"
} > $S/ratios.md
python scripts/validation_table.py $S --by method craft_bn --where epochs=8 width=0.5 sparsity=0.9,0.0 method=rst,dense-at \
  linear_bias=False,None finetune=none,None > $S/validation_craft_bn.md
