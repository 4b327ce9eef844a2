"""template.yaml as CloudFormation deploys it: the file read with its
CloudFormation tags (load_template, for the emulation and the checks), the
SAM template expanded offline by aws-sam-translator (the roles and exact
policies the policy templates make, the HTTP API's routes and authorizer),
and the intrinsic functions resolved against the emulated resources.

The emulation (infra/emulation/) takes from here what AWS enforces: each
function's role and policies, the route table, which routes need the
authorizer, each function's timeout and memory. infra/lint lints the
expanded template too (a policy a SAM function carries is checked only
there).
"""

import copy
import json
import os
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT, REGION, PARTITION = "123456789012", "us-east-1", "aws"
NO_VALUE = object()


class CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation tags (!Ref, !GetAtt, ...) as dicts."""


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    name = "Ref" if suffix == "Ref" else "Fn::" + suffix
    return {name: value}


CfnLoader.add_multi_constructor("!", _tag)


def load_template():
    with open(ROOT / "template.yaml", encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)


def expand(template):
    """The SAM template (as load_template reads it) expanded to
    plain CloudFormation, offline."""
    import logging

    from samtranslator.translator.transform import transform

    # The translator warns about usage metrics it would publish to AWS.
    logging.getLogger("samtranslator").setLevel(logging.ERROR)

    class NoIam:  # stands in for ManagedPolicyLoader: the template names no managed policy
        def load(self):
            return {}

    sam = copy.deepcopy(template)
    for name, r in sam["Resources"].items():
        p = r.get("Properties", {})
        # The translator wants S3 URIs (sam build/package makes them).
        if r["Type"] == "AWS::Serverless::Function":
            p["CodeUri"] = f"s3://placeholder/{name}.zip"
        if r["Type"] == "AWS::Serverless::StateMachine" and "DefinitionUri" in p:
            p["Definition"] = json.loads((ROOT / p.pop("DefinitionUri")).read_text(encoding="utf-8"))
    params = {k: v.get("Default") for k, v in sam.get("Parameters", {}).items()}
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    return transform(sam, params, NoIam())


class Resolver:
    """Ref, Fn::GetAtt, Fn::Sub, Fn::Join (a literal delimiter only, as
    CloudFormation), Fn::Split, Fn::Select, Fn::If and conditions, against
    given resource values and the parameters' values."""

    def __init__(self, cfn, params, refs, atts):
        self.cfn, self.refs, self.atts = cfn, dict(refs), atts
        self.refs.setdefault("AWS::Region", REGION)
        self.refs.setdefault("AWS::AccountId", ACCOUNT)
        self.refs.setdefault("AWS::Partition", PARTITION)
        self.refs.setdefault("AWS::URLSuffix", "amazonaws.com")
        self.refs["AWS::NoValue"] = NO_VALUE
        for k, v in cfn.get("Parameters", {}).items():
            val = params.get(k, v.get("Default"))
            if v.get("Type") == "CommaDelimitedList" and isinstance(val, str):
                val = val.split(",")
            self.refs.setdefault(k, val)
        self.conds = {}

    def cond(self, name):
        if name not in self.conds:
            self.conds[name] = bool(self.r(self.cfn["Conditions"][name]))
        return self.conds[name]

    def sub(self, s, local):
        def one(m):
            k = m.group(1)
            if k.startswith("!"):
                return "${" + k[1:] + "}"
            if k in local:
                return str(local[k])
            if "." in k and k.split(".")[0] not in self.refs:
                return str(self.atts[tuple(k.split(".", 1))])
            return str(self.refs[k])

        return re.sub(r"\$\{([^}]+)\}", one, s)

    def r(self, x):
        if isinstance(x, list):
            return [v for v in (self.r(i) for i in x) if v is not NO_VALUE]
        if not isinstance(x, dict):
            return x
        if len(x) == 1:
            ((k, v),) = x.items()
            if k == "Ref":
                return self.refs[v]
            if k == "Fn::GetAtt":
                return self.atts[tuple(v if isinstance(v, list) else v.split(".", 1))]
            if k == "Fn::Sub":
                if isinstance(v, str):
                    return self.sub(v, {})
                return self.sub(v[0], {n: self.r(e) for n, e in v[1].items()})
            if k == "Fn::Join":
                if not isinstance(v[0], str):
                    raise ValueError(f"Fn::Join delimiter must be a literal string, not {v[0]}")
                return v[0].join(str(i) for i in self.r(v[1]))
            if k == "Fn::Split":
                return self.r(v[1]).split(self.r(v[0]))
            if k == "Fn::Select":
                return self.r(v[1])[int(self.r(v[0]))]
            if k == "Fn::If":
                return self.r(v[1] if self.cond(v[0]) else v[2])
            if k == "Fn::Equals":
                return self.r(v[0]) == self.r(v[1])
            if k == "Fn::Not":
                return not self.r(v[0])
            if k == "Fn::And":
                return all(self.r(i) for i in v)
            if k == "Fn::Or":
                return any(self.r(i) for i in v)
            if k == "Condition":
                return self.cond(v)
        return {k: v for k, v in ((k, self.r(v)) for k, v in x.items()) if v is not NO_VALUE}


def functions(cfn):
    """{logical id: {binary, timeout, memory, role}} of every Lambda function."""
    out = {}
    for name, r in cfn["Resources"].items():
        if r["Type"] != "AWS::Lambda::Function":
            continue
        binary = (r.get("Metadata", {}).get("BuildProperties") or {}).get("Binary")
        p = r["Properties"]
        out[name] = {
            "binary": binary,
            "timeout": int(p.get("Timeout", 3)),
            "memory": int(p.get("MemorySize", 128)),
            "role": p["Role"]["Fn::GetAtt"][0],
        }
    return out


def moto_compat(doc):
    """moto authorises a transaction by its operation name; AWS by the
    item actions inside it. Grant the transaction where the item actions
    are granted. moto also refuses a document without a Version."""
    doc.setdefault("Version", "2012-10-17")
    for st in doc["Statement"]:
        acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        if {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"} & set(acts):
            acts.append("dynamodb:TransactWriteItems")
        if "dynamodb:GetItem" in acts:
            acts.append("dynamodb:TransactGetItems")
        st["Action"] = acts
    return doc


def role_policies(cfn, resolver):
    """{role logical id: {policy name: resolved document}} of every role
    the template makes (the functions' and the state machine's)."""
    out = {}
    for name, r in cfn["Resources"].items():
        if r["Type"] != "AWS::IAM::Role":
            continue
        pols = resolver.r(r["Properties"].get("Policies", []))
        out[name] = {p["PolicyName"]: moto_compat(p["PolicyDocument"]) for p in pols}
    return out


def routes(cfn):
    """The HTTP API's routes: [{method, path, authorizer, function}], and its
    authorizers {name: {function, identity headers, ttl}}."""
    out, authorizers = [], {}
    for r in cfn["Resources"].values():
        if r["Type"] != "AWS::ApiGatewayV2::Api":
            continue
        body = r["Properties"]["Body"]
        for path, methods in body["paths"].items():
            for method, op in methods.items():
                integration = op["x-amazon-apigateway-integration"]
                uri = integration["uri"]["Fn::Sub"]
                function = re.search(r"\$\{(\w+)\.Arn\}", uri if isinstance(uri, str) else uri[0]).group(1)
                security = op.get("security") or [{}]
                auth = next(iter(security[0]), None)
                out.append({
                    "method": "ANY" if method == "x-amazon-apigateway-any-method" else method.upper(),
                    "path": path,
                    "authorizer": None if auth in (None, "NONE") else auth,
                    "function": function,
                    "payload": integration.get("payloadFormatVersion", "2.0"),
                })
        for name, scheme in body.get("components", {}).get("securitySchemes", {}).items():
            a = scheme.get("x-amazon-apigateway-authorizer", {})
            uri = a["authorizerUri"]["Fn::Sub"]
            att = uri[1]["__FunctionArn__"]["Fn::GetAtt"] if isinstance(uri, list) else None
            function = (att[0] if isinstance(att, list) else att.split(".")[0]) if att else None
            authorizers[name] = {
                "function": function,
                "identity": [s.split(".")[-1].lower() for s in a.get("identitySource", [])
                             if s.startswith("$request.header.")],
                "ttl": a.get("authorizerResultTtlInSeconds"),
                "simple": bool(a.get("enableSimpleResponses")),
            }
    return out, authorizers


def function_urls(cfn):
    """{function logical id: {auth, mode, cors}} of every Function URL."""
    out = {}
    for r in cfn["Resources"].values():
        if r["Type"] == "AWS::Lambda::Url":
            p = r["Properties"]
            target = p["TargetFunctionArn"]
            name = target["Ref"] if "Ref" in target else target["Fn::GetAtt"][0]
            out[name] = {"auth": p.get("AuthType"), "mode": p.get("InvokeMode", "BUFFERED"), "cors": p.get("Cors")}
    return out


if __name__ == "__main__":
    import sys

    cfn = expand(load_template())
    if "--cfn" in sys.argv:
        print(json.dumps(cfn, indent=1))
    else:
        r, a = routes(cfn)
        print(json.dumps({"functions": functions(cfn), "routes": r, "authorizers": a,
                          "urls": function_urls(cfn)}, indent=1))
