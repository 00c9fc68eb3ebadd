#!/usr/bin/env python3
"""A local AWS for trying coxswain by hand: moto server plus aws_proxy (the CloudWatch
CBOR bridge), both on 127.0.0.1, seeded with what a new user would create.

  motoenv.py up [--port 4566]   start moto and the proxy, seed a VPC, subnet, launch
                                template and target group, write a manifest; Ctrl-C stops
  motoenv.py put VALUE [--keep] publish RequestCount=VALUE for the seeded target group
                                (with --keep: again every 20 s until Ctrl-C)
  motoenv.py status             list coxswain's instances and the target group's targets

Talks only to 127.0.0.1.
"""

import argparse
import datetime as dt
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
STATE_DIR = pathlib.Path(os.environ.get("COXSWAIN_MOTO_DIR", "/tmp/coxswain-moto"))
STATE = STATE_DIR / "state.json"

MANIFEST = """# Written by tests/tools/motoenv.py for the local moto environment.
name: web
environment: staging
region: us-east-1
launch:
  launch_template: {{ name: {lt}, version: "1" }}
  subnets: [{subnet}]
target_group_arn: {tg}
capacity: {{ min: 1, max: 10 }}
scaling:
  warmup: 0s
  scale_in_stabilization: 1m
  policies:
    - target_tracking:
        metric:
          namespace: AWS/ApplicationELB
          name: RequestCount
          dimensions: {{ TargetGroup: {dim} }}
          stat: Maximum     # motoenv.py put may publish several points per minute
          kind: total
        target: 100
"""


def boto(service, port):
    import boto3
    return boto3.client(service, region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def wait(url):
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"{url} did not answer")


def up(args):
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    bindir = pathlib.Path(sys.executable).parent
    moto_port = args.port + 1
    moto = subprocess.Popen([str(bindir / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = subprocess.Popen([sys.executable, str(HERE / "aws_proxy.py"), "--port", str(args.port),
                              "--upstream", str(moto_port)])
    try:
        wait(f"http://127.0.0.1:{moto_port}/moto-api/")
        wait(f"http://127.0.0.1:{args.port}/__ping")
        ec2 = boto("ec2", moto_port)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        image = ec2.describe_images()["Images"][0]["ImageId"]
        ec2.create_launch_template(LaunchTemplateName="web-lt",
                                   LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"})
        elb = boto("elbv2", moto_port)
        tg = elb.create_target_group(Name="web-tg", Protocol="HTTP", Port=80, VpcId=vpc,
                                     TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
        dim = "targetgroup/" + tg.split(":targetgroup/", 1)[1]
        manifest = STATE_DIR / "web.yaml"
        manifest.write_text(MANIFEST.format(lt="web-lt", subnet=subnet, tg=tg, dim=dim))
        STATE.write_text(json.dumps({"port": args.port, "moto_port": moto_port, "tg": tg, "dim": dim}))
        print(f"moto on 127.0.0.1:{moto_port}, endpoint for coxswain: http://127.0.0.1:{args.port}")
        print(f"manifest written to {manifest}; Ctrl-C stops")
        moto.wait()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.terminate()
        moto.terminate()


def state():
    try:
        return json.loads(STATE.read_text())
    except FileNotFoundError:
        sys.exit("no environment: run `motoenv.py up` first")


def put(args):
    st = state()
    cw = boto("cloudwatch", st["port"])
    while True:
        now = dt.datetime.now(dt.timezone.utc)
        cw.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=[{
            "MetricName": "RequestCount", "Dimensions": [{"Name": "TargetGroup", "Value": st["dim"]}],
            "Timestamp": now, "Value": args.value}])
        print(f"{now:%H:%M:%S} RequestCount={args.value}", flush=True)
        if not args.keep:
            return
        time.sleep(20)


def status(_args):
    st = state()
    ec2 = boto("ec2", st["moto_port"])
    res = ec2.describe_instances(Filters=[{"Name": "tag-key", "Values": ["coxswain:fleet"]},
                                          {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    ids = [i["InstanceId"] for r in res["Reservations"] for i in r["Instances"]]
    health = boto("elbv2", st["moto_port"]).describe_target_health(TargetGroupArn=st["tg"])
    print(f"instances ({len(ids)}): {' '.join(ids)}")
    print("targets: " + " ".join(f"{d['Target']['Id']}={d['TargetHealth']['State']}"
                                  for d in health["TargetHealthDescriptions"]))


def main():
    ap = argparse.ArgumentParser(description="local moto environment for coxswain")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up")
    p.add_argument("--port", type=int, default=4566)
    p.set_defaults(fn=up)
    p = sub.add_parser("put")
    p.add_argument("value", type=float)
    p.add_argument("--keep", action="store_true")
    p.set_defaults(fn=put)
    p = sub.add_parser("status")
    p.set_defaults(fn=status)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
