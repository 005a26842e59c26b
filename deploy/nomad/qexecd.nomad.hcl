# qexecd on every Nomad client: a system job, one allocation per eligible node.
# Not run on a Nomad cluster here: see README "Kubernetes and Nomad" for what was
# checked and how.
#
# raw_exec runs qexecd on the host, as root, like the systemd unit in README: host
# network (UDP 7443 on the node's addresses), host cgroup hierarchy and namespaces,
# the host filesystem (read-only for jobs). No container is in the way, so nothing
# needs `privileged`. Each client must enable the driver in its agent configuration:
#   plugin "raw_exec" { config { enabled = true } }
#
# Each node needs, before the job is placed (your configuration management, or a
# `template` block rendering them from Vault or Nomad Variables):
#   /usr/local/bin/qexecd (release build), and /usr/local/bin/qexec for the check below;
#   /etc/qexec/ca.pem, server.pem, server-key.pem: this node's own server certificate,
#     issued on the CA's machine with
#     `qexec certs issue-server --dir PKI --san NODE_NAME --san NODE_IP` and copied over
#     (never ca-key.pem);
#   /etc/qexec/probe.pem, probe-key.pem: a viewer identity, `qexec certs issue probe
#     --role viewer --dir PKI` (only for the commented check).
job "qexecd" {
  type = "system"

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  group "qexecd" {
    # Reserves the port in Nomad's view of the node; qexecd binds it itself.
    network {
      port "qexec" {
        static = 7443
      }
    }

    # A failed qexecd is restarted on its node; Nomad has no UDP health check.
    restart {
      attempts = 10
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    task "qexecd" {
      driver = "raw_exec"

      config {
        command = "/usr/local/bin/qexecd"
        args = [
          "--listen=0.0.0.0:7443", # [::]:7443 on dual-stack nodes
          "--pki-dir=/etc/qexec",
          "--state-dir=/var/lib/qexec", # jobs.db and output logs, kept across restarts
          "--log-format=json",
        ]
      }

      # qexecd stops its jobs on SIGTERM (SIGTERM, 5 s, SIGKILL each), then exits.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      # For qexecd itself: jobs run in qexecd's own cgroups (/sys/fs/cgroup/qexec or
      # the v1 equivalents), outside the task's. Size jobs with qexecd's --max-jobs,
      # --max-memory and --max-cpu, and keep that capacity out of Nomad's
      # (client `reserved` block).
      resources {
        cpu    = 200
        memory = 256
      }

      # With Consul, a script check proves the listener, the TLS handshake and the
      # request path over loopback (a TCP check would test nothing: UDP only):
      # service {
      #   provider = "consul"
      #   name     = "qexecd"
      #   port     = "qexec"
      #   check {
      #     type     = "script"
      #     command  = "/usr/local/bin/qexec"
      #     args     = ["--addr=127.0.0.1:7443", "--ca=/etc/qexec/ca.pem",
      #                 "--cert=/etc/qexec/probe.pem", "--key=/etc/qexec/probe-key.pem",
      #                 "--connect-timeout=5s", "info"]
      #     interval = "30s"
      #     timeout  = "10s"
      #   }
      # }
    }
  }
}
