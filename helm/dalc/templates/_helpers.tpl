{{/*
Name of the chart, or nameOverride, cut to the 63 characters a label value allows.
*/}}
{{- define "dalc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name, the prefix of every object: "<release>-<name>", or the release name alone
when it already contains the name, or fullnameOverride. Suffixes such as "-worker" are added to it,
so it is cut at 52 characters to leave them room.
*/}}
{{- define "dalc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "dalc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every object carries; templates add app.kubernetes.io/component after them.
*/}}
{{- define "dalc.labels" -}}
helm.sh/chart: {{ include "dalc.chart" . }}
{{ include "dalc.selectorLabels" . }}
app.kubernetes.io/version: {{ include "dalc.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: dalc
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select pods, with app.kubernetes.io/component after them; never change them, a
Deployment's selector is immutable.
*/}}
{{- define "dalc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dalc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount of the web, worker and sweeper pods.
*/}}
{{- define "dalc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dalc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Tag of the dalc image: image.tag, or the chart's appVersion.
*/}}
{{- define "dalc.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
Name of the Secret with the URLs (and the bundled services' credentials). It hangs on the release
name alone because the subcharts name it from their own scope, through their templated
auth.existingSecret.
*/}}
{{- define "dalc.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-credentials" .Release.Name) }}
{{- end }}

{{/*
One credential for the generated Secret: the value given in values, else the one an earlier
release stored (so upgrades keep it, and the data PostgreSQL and RabbitMQ initialised with it),
else a random one. Takes a dict: given, existing (the old Secret's data), key, length.
*/}}
{{- define "dalc.credential" -}}
{{- .given | default (index .existing .key | default "" | b64dec) | default (randAlphaNum (int .length)) }}
{{- end }}

{{/*
Host name of the bundled PostgreSQL's Service, computed by the subchart's own naming helper.
*/}}
{{- define "dalc.postgresql.host" -}}
{{- include "postgresql.fullname" (dict "Values" .Values.postgresql "Release" .Release "Chart" (dict "Name" "postgresql")) }}
{{- end }}

{{/*
Host name of the bundled RabbitMQ's Service, computed by the subchart's own naming helper.
*/}}
{{- define "dalc.rabbitmq.host" -}}
{{- include "rabbitmq.fullname" (dict "Values" .Values.rabbitmq "Release" .Release "Chart" (dict "Name" "rabbitmq")) }}
{{- end }}

{{/*
Selector labels of a bundled service's pods, computed by the subchart's own helper. Takes a dict:
root, chart ("postgresql" or "rabbitmq").
*/}}
{{- define "dalc.subchartSelectorLabels" -}}
{{- include (printf "%s.selectorLabels" .chart) (dict "Values" (index .root.Values .chart) "Release" .root.Release "Chart" (dict "Name" .chart)) }}
{{- end }}

{{/*
"true" when the chart deploys Jaeger: tracing is on and no other endpoint is given.
*/}}
{{- define "dalc.jaeger.enabled" -}}
{{- if and .Values.tracing.enabled .Values.tracing.jaeger.enabled (not .Values.tracing.endpoint) }}true{{ end }}
{{- end }}

{{/*
OTLP endpoint of every dalc process: tracing.endpoint, else the bundled Jaeger's port for the
chosen protocol.
*/}}
{{- define "dalc.tracing.endpoint" -}}
{{- if .Values.tracing.endpoint }}
{{- .Values.tracing.endpoint }}
{{- else if include "dalc.jaeger.enabled" . }}
{{- printf "http://%s-jaeger:%s" (include "dalc.fullname" .) (ternary "4317" "4318" (eq .Values.tracing.protocol "grpc")) }}
{{- else }}
{{- fail "tracing.enabled needs tracing.endpoint, or tracing.jaeger.enabled to deploy Jaeger" }}
{{- end }}
{{- end }}

{{/*
Hook phases of the migration Job. Before an upgrade, always: the new code meets the new schema.
On install, before the release with an external PostgreSQL, but after it with the bundled one,
which does not exist before the release does.
*/}}
{{- define "dalc.migrations.hook" -}}
{{- if .Values.postgresql.enabled }}post-install,pre-upgrade{{ else }}pre-install,pre-upgrade{{ end }}
{{- end }}

{{/*
Milliseconds a SIGTERMed worker gives the tasks in hand (dramatiq's --worker-shutdown-timeout): it
must end before the kubelet's SIGKILL at terminationGracePeriodSeconds.
*/}}
{{- define "dalc.worker.shutdownMilliseconds" -}}
{{- if ge (int .Values.worker.shutdownSeconds) (int .Values.worker.terminationGracePeriodSeconds) }}
{{- fail "worker.shutdownSeconds must be less than worker.terminationGracePeriodSeconds" }}
{{- end }}
{{- mul (int .Values.worker.shutdownSeconds) 1000 }}
{{- end }}

{{/*
Pod annotations of a dalc component: checksums that roll the pods when their configuration or
credentials change, scrape annotations when the component serves metrics, and podAnnotations.
Takes a dict: root, metricsPort (empty when the component serves no metrics).
*/}}
{{- define "dalc.podAnnotations" -}}
{{- $root := .root -}}
checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
{{- if not $root.Values.existingSecret }}
checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
{{- end }}
{{- if and .metricsPort $root.Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .metricsPort | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with $root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod-level settings shared by every dalc pod: pull secrets, security context, scheduling.
*/}}
{{- define "dalc.podCommon" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Container settings shared by every container that runs the dalc image: image, security context,
the credentials from the Secret and the writable /tmp. Takes a dict: root, service (the
OTEL_SERVICE_NAME), config (false for the migration hook, which may run before the ConfigMap exists)
and env (more variables, as a list of name/value dicts).
*/}}
{{- define "dalc.container" -}}
{{- $root := .root -}}
image: "{{ $root.Values.image.repository }}:{{ include "dalc.imageTag" $root }}"
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
{{- if .config }}
envFrom:
  - configMapRef:
      name: {{ include "dalc.fullname" $root }}
{{- end }}
env:
  - name: DALC_DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "dalc.secretName" $root }}
        key: database-url
  - name: DALC_BROKER_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "dalc.secretName" $root }}
        key: broker-url
  - name: OTEL_SERVICE_NAME
    value: {{ .service }}
  {{- with .env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/*
The Service (its name after the fullname) and port name the web's /metrics is scraped through: the
headless web-metrics Service when web.metrics.port gives metrics a port of their own, else the web's
Service on http. The ServiceMonitor scrapes it and the PrometheusRule's job label is its name.
*/}}
{{- define "dalc.web.metricsService" -}}
{{- ternary "web-metrics" "web" (not (empty .Values.web.metrics.port)) }}
{{- end }}

{{/*
The most connections dalc's pods hold on PostgreSQL at once: each web process one per thread and one
for its listener, each worker process one per thread, each sweeper one, the migration Job and the purge
CronJob one each; counted during a rolling update, when a Deployment runs a quarter of its replicas
(rounded up, Kubernetes' default surge) beside the old pods, with the workers at their autoscaling
maximum.
*/}}
{{- define "dalc.database.connections" -}}
{{- $workers := ternary .Values.worker.autoscaling.maxReplicas .Values.worker.replicas .Values.worker.autoscaling.enabled -}}
{{- $web := mul (include "dalc.withSurge" .Values.web.replicas) .Values.web.workers (add .Values.web.threads 1) -}}
{{- $worker := mul (include "dalc.withSurge" $workers) .Values.worker.processes .Values.worker.threads -}}
{{- $sweeper := include "dalc.withSurge" .Values.sweeper.replicas -}}
{{- add $web $worker $sweeper 2 -}}
{{- end }}

{{/*
A number of replicas with Kubernetes' default rolling-update surge added: a quarter, rounded up.
*/}}
{{- define "dalc.withSurge" -}}
{{- add . (div (add . 3) 4) -}}
{{- end }}

{{/*
Refuse to render when dalc could open more connections than the bundled PostgreSQL accepts (less the
three it keeps for superusers), or than externalDatabase.maxConnections gives it on an external one
(unchecked when 0): past that, requests answer 503 and messages wait for retries.
*/}}
{{- define "dalc.database.checkConnections" -}}
{{- $need := int (include "dalc.database.connections" .) }}
{{- if .Values.postgresql.enabled }}
{{- $max := int .Values.postgresql.maxConnections }}
{{- $room := sub $max 3 }}
{{- if gt $need $room }}
{{- fail (printf "dalc's pods may hold %d connections to the bundled PostgreSQL at once, more than the %d that postgresql.maxConnections=%d leaves them: raise postgresql.maxConnections, or lower the replicas, processes or threads (docs/deploy.md, \"Database connections\")" $need $room $max) }}
{{- end }}
{{- else }}
{{- $room := int .Values.externalDatabase.maxConnections }}
{{- if and (gt $room 0) (gt $need $room) }}
{{- fail (printf "dalc's pods may hold %d connections to the external PostgreSQL at once, more than externalDatabase.maxConnections=%d: give dalc more of the server's connections, or lower the replicas, processes or threads (docs/deploy.md, \"Database connections\")" $need $room) }}
{{- end }}
{{- end }}
{{- end }}
