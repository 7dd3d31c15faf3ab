# Issue 13: the charon stand-in (jobs/standin.py) installs what charon 5.9.8 installs. N=10
# CHILD_SAs of lab_conf_many by real charon on gateway A, its kernel objects with what differs
# per SA taken out; then charon gone, the stand-in's for the same N, the same way.
set -e
N=${LAB_SCALE_N:-10}
. tests/lab/topology.sh
lab_many_up "$N"
S="$LAB_PY $LAB_DIR/jobs/standin.py"
lab_section charon; ip netns exec gwa $S shape
lab_section charon_list; ip netns exec gwa "$LAB_PY" - <<'PY'
import json
from swan_offload.vici_source import list_sas
sas = list_sas("/run/gwa/charon.vici")
print(json.dumps({"ikes": len(sas.ikes), "children": len(sas.children), "errors": sas.errors}))
PY
lab_charon_kill gwa
ip -n gwa xfrm state flush && ip -n gwa xfrm policy flush
ip netns exec gwa $S /run/gwa/standin.vici many "$N" >/run/standin.out 2>&1 &
for i in $(seq 600); do grep -q ready /run/standin.out && break; sleep 0.2; done
lab_section standin; ip netns exec gwa $S shape
lab_section standin_list; ip netns exec gwa "$LAB_PY" - <<'PY'
import json
from swan_offload.vici_source import list_sas
sas = list_sas("/run/gwa/standin.vici")
print(json.dumps({"ikes": len(sas.ikes), "children": len(sas.children), "errors": sas.errors}))
PY
lab_section standin_out; cat /run/standin.out
lab_section end
