"""Private RabbitMQ nodes, RabbitMQ clusters and PostgreSQL servers that a test may stop, kill and restart.

The machine's own PostgreSQL and RabbitMQ are shared by every test and must never be disturbed; a test
that injects faults starts its own instances instead:

    with RabbitCluster(3) as cluster:       # three joined nodes; cluster.amqp_urls for DALC_BROKER_URL
        cluster.nodes[0].stop()              # `rabbitmqctl stop`; or .kill() (SIGKILL); .start() again
    with RabbitNode() as node:               # one node; node.amqp_url, node.ctl("list_queues")
        ...
    with PrivatePostgres() as pg:            # pg.url("name"), pg.create_database("name")
        pg.restart(); pg.stop(mode="immediate"); pg.kill(); pg.start()

RabbitNode(cookie=None)   .name .port .dist_port .amqp_url .running .dir .log_path .env
                          start(timeout) launch() wait_ready(timeout) stop(timeout) kill() ctl(*args)
                          log_tail() cleanup()
RabbitCluster(size=3)     .nodes .amqp_urls  start(timeout) running_nodes() stop_node(i) start_node(i)
                          cleanup()
PrivatePostgres(**settings)  (settings: server's `-c name=value`, e.g. max_connections=20)
                          .port .dir .data .postmaster_pid .running  url(dbname) create_database(name)
                          start(timeout) stop(mode, timeout) restart(timeout) kill() log_tail() cleanup()
epmd_names()              the short names of the Erlang nodes epmd knows
require_binaries(available, what)  skip a test (fail it under CI=true) when rabbitmq_available() or
                          postgres_available() says the machine cannot run them

Each instance runs the machine's binaries as the service's own user (rabbitmq, postgres), on free ports
bound to 127.0.0.1, in a temporary folder whose name carries this process's id (`dalc-p<pid>-…`); a
node's name is `dalc-p<pid>-<n>@localhost`, with an Erlang cookie of its own (its cluster's). `start()`
on a stopped or killed instance starts it again on the same data. Every instance is killed and its
folder removed by `cleanup()`, by `with`, and at interpreter exit; `reap_orphans()`, run on import,
also kills what a test process that died without cleaning up left behind. epmd is shared with the
machine's RabbitMQ and is never touched: a node whose process ended is gone from it. Every wait is
bounded and fails with a ServiceError that ends with the instance's log.
"""
from harness.private_common import ServiceError, reap_orphans, require_binaries
from harness.private_postgres import PrivatePostgres, postgres_available
from harness.private_rabbitmq import RabbitCluster, RabbitNode, epmd_names, rabbitmq_available

__all__ = [
    "PrivatePostgres", "RabbitCluster", "RabbitNode", "ServiceError",
    "epmd_names", "postgres_available", "rabbitmq_available", "reap_orphans", "require_binaries",
]

reap_orphans()
