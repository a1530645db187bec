"""Checks what template.yaml turns into, with the SAM translator the pinned SAM CLI brings.

Run by `make lint`: .venv-deploy/bin/python tools/check_template.py template.yaml

- every route (the root and the greedy proxy, any method) is integrated with the function
  through Lambda's response-streaming invocation, with responseTransferMode STREAM;
- each integration's timeout is the function's timeout, and the timeouts the function
  reads agree with them: OPENAI_TIMEOUT_SECONDS under API Gateway's 5-minute idle limit,
  STREAM_TIMEOUT_SECONDS under the function's timeout;
- the API is regional, throttled on its stage, and ApiUrl is the stage's URL;
- OPENAI_BASE_URL comes from a parameter that takes https:// URLs only, so the built-in
  echo upstream (`echo`) can never be deployed;
- the optional custom domain name is a regional domain whose base path mapping points at
  the API's own stage, and only when DomainName is set;
- the function may invoke itself (a background response's run, an Event invocation) and
  nothing else, on its own role; its Event invocations are never retried and are dropped
  after a minute, which the function's read of a run counts on (`START_WITHIN`).
"""

import os
import re
import sys

import yaml
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    """The template names no managed policy; the translator asks anyway."""

    def load(self):
        return {}


def main(path):
    # The translator reads the region from boto3's session; no AWS call is made.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(path) as f:
        template = yaml_parse(f.read())
    parameters = {
        name: spec.get("Default", "")
        for name, spec in template.get("Parameters", {}).items()
    }
    parameters.update({"AWS::Region": "us-east-1", "AWS::Partition": "aws", "AWS::AccountId": "123456789012"})
    # `sam package` replaces the local code path with the uploaded artifact's S3 URI.
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://artifacts/chat-proxy.zip"
    output = transform(template, parameters, NoManagedPolicies())
    resources = output["Resources"]
    problems = []

    functions = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function"]
    assert len(functions) == 1, f"one function, found {len(functions)}"
    function = functions[0]["Properties"]
    timeout_ms = int(function["Timeout"]) * 1000
    env = function["Environment"]["Variables"]

    apis = [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    assert len(apis) == 1, f"one REST API, found {len(apis)}"
    if any(r["Type"].startswith("AWS::ApiGatewayV2::") for r in resources.values()):
        problems.append("an HTTP API is still in the template: one API, one URL")
    api = apis[0]["Properties"]
    if api.get("EndpointConfiguration", {}).get("Types") != ["REGIONAL"]:
        problems.append(f"the API is not REGIONAL: {api.get('EndpointConfiguration')}")
    paths = api["Body"]["paths"]
    routes = {(path, method) for path, methods in paths.items() for method in methods}
    wanted = {("/", "x-amazon-apigateway-any-method"), ("/{proxy+}", "x-amazon-apigateway-any-method")}
    if not wanted <= routes:
        problems.append(f"routes {sorted(wanted - routes)} are missing from {sorted(routes)}")
    for path, method in sorted(routes):
        integration = paths[path][method].get("x-amazon-apigateway-integration", {})
        where = f"{method.upper()} {path}"
        if integration.get("responseTransferMode") != "STREAM":
            problems.append(f"{where}: responseTransferMode is {integration.get('responseTransferMode')!r}, not STREAM")
        uri = yaml.safe_dump(integration.get("uri"))
        if "/2021-11-15/functions/" not in uri or "/response-streaming-invocations" not in uri:
            problems.append(f"{where}: not the response-streaming invocation URI: {uri.strip()}")
        if integration.get("timeoutInMillis") != timeout_ms:
            problems.append(f"{where}: timeoutInMillis {integration.get('timeoutInMillis')} is not the function's {timeout_ms}")
        if integration.get("type") != "aws_proxy":
            problems.append(f"{where}: integration type {integration.get('type')!r}")

    openai_timeout = int(parameters["OpenAiTimeoutSeconds"])
    stream_timeout = int(parameters["StreamTimeoutSeconds"])
    if env.get("OPENAI_TIMEOUT_SECONDS") != {"Ref": "OpenAiTimeoutSeconds"}:
        problems.append("OPENAI_TIMEOUT_SECONDS is not the OpenAiTimeoutSeconds parameter")
    if env.get("STREAM_TIMEOUT_SECONDS") != {"Ref": "StreamTimeoutSeconds"}:
        problems.append("STREAM_TIMEOUT_SECONDS is not the StreamTimeoutSeconds parameter")
    max_openai = int(template["Parameters"]["OpenAiTimeoutSeconds"]["MaxValue"])
    max_stream = int(template["Parameters"]["StreamTimeoutSeconds"]["MaxValue"])
    if not openai_timeout <= max_openai < 300:
        problems.append(f"OpenAiTimeoutSeconds may reach {max_openai} s: API Gateway drops a silent response at 300 s")
    if not stream_timeout <= max_stream < timeout_ms // 1000:
        problems.append(f"StreamTimeoutSeconds may reach {max_stream} s, not under the function's {timeout_ms // 1000} s")

    if env.get("OPENAI_BASE_URL") != {"Ref": "OpenAiBaseUrl"}:
        problems.append("OPENAI_BASE_URL is not the OpenAiBaseUrl parameter")
    base_url = template["Parameters"]["OpenAiBaseUrl"]
    pattern = base_url.get("AllowedPattern")
    if not pattern:
        problems.append("OpenAiBaseUrl takes any value: `echo` could be deployed")
    else:
        # What CloudFormation would take and refuse: the whole value must match.
        for value in ["echo", "http://api.openai.com/v1", "https://", " https://x", "ftp://x"]:
            if re.fullmatch(pattern, value):
                problems.append(f"OpenAiBaseUrl accepts {value!r}")
        for value in [base_url["Default"], "https://example.openai.azure.com/openai/v1"]:
            if not re.fullmatch(pattern, value):
                problems.append(f"OpenAiBaseUrl refuses {value!r}")

    stages = [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::Stage"]
    settings = stages[0]["Properties"].get("MethodSettings", []) if stages else []
    if not any("ThrottlingBurstLimit" in s and "ThrottlingRateLimit" in s for s in settings):
        problems.append("the stage has no throttling")
    api_url = yaml.safe_dump(output["Outputs"]["ApiUrl"]["Value"])
    if "${StageName}" not in api_url:
        problems.append(f"ApiUrl is not the stage's URL: {api_url.strip()}")

    domains = {name: r for name, r in resources.items() if r["Type"] == "AWS::ApiGateway::DomainName"}
    mappings = [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::BasePathMapping"]
    stage_names = {name for name, r in resources.items() if r["Type"] == "AWS::ApiGateway::Stage"}
    if len(domains) != 1 or len(mappings) != 1:
        problems.append(f"one custom domain and one base path mapping, found {len(domains)} and {len(mappings)}")
    else:
        (domain_name, domain), mapping = next(iter(domains.items())), mappings[0]
        if domain.get("Condition") != "HasDomain" or mapping.get("Condition") != "HasDomain":
            problems.append("the custom domain is made whether or not DomainName is set")
        if domain["Properties"].get("EndpointConfiguration", {}).get("Types") != ["REGIONAL"]:
            problems.append("the custom domain is not REGIONAL")
        stage = mapping["Properties"].get("Stage", {})
        if not (isinstance(stage, dict) and stage.get("Ref") in stage_names):
            problems.append(f"the base path mapping's stage is not the API's stage: {stage}")
        if mapping["Properties"].get("DomainName") != {"Ref": domain_name}:
            problems.append("the base path mapping is not on the custom domain")
    domain_pattern = template["Parameters"]["DomainName"]["AllowedPattern"]
    for value in ["", "chat.example.com", "api.chat-proxy.example.co.uk"]:
        if not re.fullmatch(domain_pattern, value):
            problems.append(f"DomainName refuses {value!r}")
    for value in ["https://chat.example.com", "chat", "chat.example.com/"]:
        if re.fullmatch(domain_pattern, value):
            problems.append(f"DomainName accepts {value!r}")

    function_name = next(name for name, r in resources.items() if r["Type"] == "AWS::Lambda::Function")
    role = functions[0]["Properties"].get("Role", {}).get("Fn::GetAtt", [None])[0]
    invokes = []
    for name, resource in resources.items():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            if "lambda:InvokeFunction" in str(statement.get("Action")):
                invokes.append((name, resource["Properties"], statement))
    if len(invokes) != 1:
        problems.append(f"one statement lets the function invoke itself, found {len(invokes)}")
    else:
        name, policy, statement = invokes[0]
        targets = yaml.safe_dump(statement["Resource"])
        if statement["Action"] != "lambda:InvokeFunction" or statement["Effect"] != "Allow":
            problems.append(f"{name}: grants {statement['Action']} ({statement['Effect']})")
        if targets.count(function_name) != len(statement["Resource"]) or "*" in targets.replace(":*", ""):
            problems.append(f"{name}: may invoke more than the function itself: {targets.strip()}")
        if policy["Roles"] != [{"Ref": role}]:
            problems.append(f"{name}: not on the function's own role ({role}): {policy['Roles']}")
    event_configs = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
    if len(event_configs) != 1:
        problems.append(f"one EventInvokeConfig, found {len(event_configs)}")
    elif (event_configs[0].get("MaximumRetryAttempts"), event_configs[0].get("MaximumEventAgeInSeconds")) != (0, 60):
        problems.append(f"Event invocations must not be retried and must be dropped after 60 s: {event_configs[0]}")

    if problems:
        print("template.yaml, as SAM translates it:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print(f"template.yaml: {len(routes)} routes stream through the response-streaming invocation, "
          f"timeouts agree (integration {timeout_ms} ms = function {timeout_ms // 1000} s; "
          f"OPENAI_TIMEOUT_SECONDS <= {max_openai} s; STREAM_TIMEOUT_SECONDS <= {max_stream} s); "
          f"OPENAI_BASE_URL takes https:// URLs only; the custom domain maps to the API's stage; "
          f"the function may invoke itself only, never retried")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
