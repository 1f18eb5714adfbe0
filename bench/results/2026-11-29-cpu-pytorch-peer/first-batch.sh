# usage: b0.sh N env...   counts runs whose first timed batch takes > 5 ms
n=$1; shift
c=0
for i in $(seq 1 $n); do env "$@" ./build/exitrt eval -m models/fmnist-mlp -d fashion-mnist:test -p fixed:0 --trace /tmp/trb.json > /dev/null
python3 -c "
import json,sys
ev=json.load(open('/tmp/trb.json')); ev=ev['traceEvents'] if isinstance(ev,dict) else ev
b=[e for e in ev if e.get('ph')=='X' and e['name']=='batch']
sys.exit(0 if b[0]['dur']>5000 else 1)" && c=$((c+1)); done
echo "$* : $c of $n"
