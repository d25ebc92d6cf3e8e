{{/* Names, labels and the pieces every role shares. */}}

{{- define "remotemedia.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "remotemedia.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; "component" is added per role. */}}
{{- define "remotemedia.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "remotemedia.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.common.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one role: (dict "ctx" $ "component" "worker"). */}}
{{- define "remotemedia.selectorLabels" -}}
app.kubernetes.io/name: {{ include "remotemedia.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "remotemedia.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "remotemedia.redisName" -}}
{{- printf "%s-redis" (include "remotemedia.fullname" .) -}}
{{- end -}}

{{/* The env entry that carries the Redis URL. */}}
{{- define "remotemedia.redisEnv" -}}
- name: REMOTEMEDIA_REDIS_URL
{{- if .Values.redis.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else if .Values.redis.url }}
  value: {{ .Values.redis.url | quote }}
{{- else if .Values.redis.bundled.enabled }}
  value: {{ printf "redis://%s:6379" (include "remotemedia.redisName" .) | quote }}
{{- else }}
{{- fail "set redis.url, redis.existingSecret, or redis.bundled.enabled=true" }}
{{- end }}
{{- if .Values.redis.tls.caSecret }}
- name: REMOTEMEDIA_REDIS_CA_FILE
  value: {{ printf "%s/%s" (include "remotemedia.redisCaDir" .) .Values.redis.tls.caSecretKey | quote }}
{{- end }}
- name: REMOTEMEDIA_REDIS_PREFIX
  value: {{ .Values.redisPrefix | quote }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- end -}}

{{/* Secrets and tracing of every role: client tokens and TURN (frontends), the worker API
token (frontends, workers, and the controller, which drains and undrains workers), OTLP
export (all). `role` picks what applies. */}}
{{- define "remotemedia.securityEnv" -}}
{{- $root := .root -}}
{{- $a := $root.Values.auth -}}
{{- if and $a.existingSecret (eq .role "frontend") $a.clientSecretKey }}
- name: REMOTEMEDIA_AUTH_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $a.existingSecret }}
      key: {{ $a.clientSecretKey }}
{{- end }}
{{- if and $a.existingSecret (has .role (list "frontend" "worker" "controller")) $a.workerTokenKey }}
- name: REMOTEMEDIA_WORKER_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $a.existingSecret }}
      key: {{ $a.workerTokenKey }}
{{- end }}
{{- $t := $root.Values.turn -}}
{{- if and $t.existingSecret (eq .role "frontend") }}
{{- if not $t.uris }}
{{- fail "turn.existingSecret needs turn.uris: the TURN URLs clients use the credentials with" }}
{{- end }}
- name: REMOTEMEDIA_TURN_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $t.existingSecret }}
      key: {{ $t.secretKey }}
- name: REMOTEMEDIA_TURN_URIS
  value: {{ join "," $t.uris | quote }}
- name: REMOTEMEDIA_TURN_TTL
  value: {{ $t.ttl | quote }}
{{- end }}
{{- $o := $root.Values.tracing -}}
{{- if $o.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $o.otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $o.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $o.samplingRatio | quote }}
{{- end }}
- name: REMOTEMEDIA_LOG_FORMAT
  value: {{ $o.logFormat | quote }}
{{- end -}}

{{/* Where the manifests ConfigMap is mounted. */}}
{{- define "remotemedia.manifestDir" -}}/etc/remotemedia/manifests{{- end -}}

{{/* Env of the roles that load pipelines. */}}
{{- define "remotemedia.manifestEnv" -}}
- name: WEBRTC_PIPELINE_MANIFEST
  value: {{ printf "%s/%s" (include "remotemedia.manifestDir" .) .Values.manifests.default | quote }}
- name: REMOTEMEDIA_MANIFEST_DIR
  value: {{ include "remotemedia.manifestDir" . | quote }}
{{- end -}}

{{/* Pod annotations that roll pods when the manifests change. */}}
{{- define "remotemedia.checksums" -}}
checksum/manifests: {{ include (print $.Template.BasePath "/configmap-manifests.yaml") . | sha256sum }}
{{- end -}}

{{- define "remotemedia.podCommon" -}}
{{- $root := .root -}}
{{- $role := index $root.Values .role -}}
{{- with $root.Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.common.podSecurityContext | nindent 2 }}
{{- /* Per role: its nodeSelector over the common one (key by key), the common tolerations
plus its own, its priority class and topology spread (each constraint gets the role's pods
as its labelSelector unless it names one). */}}
{{- with merge (deepCopy ($role.nodeSelector | default dict)) ($root.Values.common.nodeSelector | default dict) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with concat ($root.Values.common.tolerations | default list) ($role.tolerations | default list) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $role.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $role.topologySpreadConstraints }}
topologySpreadConstraints:
{{- range . }}
  - {{- toYaml (omit . "labelSelector") | nindent 4 }}
    labelSelector:
      {{- if .labelSelector }}
      {{- toYaml .labelSelector | nindent 6 }}
      {{- else }}
      matchLabels:
        {{- include "remotemedia.selectorLabels" (dict "ctx" $root "component" $.role) | nindent 8 }}
      {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* HTTP probes: liveness /healthz (the process serves), readiness /readyz (it takes work);
HTTPS on frontends that serve TLS. (dict "root" $ "role" "frontend") */}}
{{- define "remotemedia.probes" -}}
{{- $scheme := ternary "HTTPS" "HTTP" (and .root.Values.tls.enabled (eq .role "frontend")) -}}
{{- $p := (index .root.Values .role).probes -}}
{{- /* startup: /healthz until the process serves (liveness waits for it); liveness:
/healthz; readiness: /readyz. Timings per role (`<role>.probes`). */}}
startupProbe:
  httpGet:
    path: /healthz
    port: http
    scheme: {{ $scheme }}
  {{- toYaml $p.startup | nindent 2 }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
    scheme: {{ $scheme }}
  {{- toYaml $p.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
    scheme: {{ $scheme }}
  {{- toYaml $p.readiness | nindent 2 }}
{{- end -}}

{{- define "remotemedia.workerName" -}}
{{- printf "%s-worker" (include "remotemedia.fullname" .) -}}
{{- end -}}

{{/* Where the Redis CA and the frontends' TLS certificate are mounted. */}}
{{- define "remotemedia.redisCaDir" -}}/etc/remotemedia/redis-ca{{- end -}}
{{- define "remotemedia.tlsDir" -}}/etc/remotemedia/tls{{- end -}}
{{- define "remotemedia.workerTlsDir" -}}/etc/remotemedia/worker-tls{{- end -}}

{{/* Volume mounts of the Secrets a role reads: the Redis CA (every role), the serving
certificate (frontends, `tls.enabled`). (dict "root" $ "role" "frontend") */}}
{{- define "remotemedia.secretMounts" -}}
{{- if .root.Values.redis.tls.caSecret }}
- name: redis-ca
  mountPath: {{ include "remotemedia.redisCaDir" .root }}
  readOnly: true
{{- end }}
{{- if and .root.Values.tls.enabled (eq .role "frontend") }}
- name: tls
  mountPath: {{ include "remotemedia.tlsDir" .root }}
  readOnly: true
{{- end }}
{{- if and .root.Values.workerTls.enabled (or (has .role (list "frontend" "worker")) (and (eq .role "controller") .root.Values.controller.autoscaling.enabled)) }}
- name: worker-tls
  mountPath: {{ include "remotemedia.workerTlsDir" .root }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "remotemedia.secretVolumes" -}}
{{- if .root.Values.redis.tls.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ .root.Values.redis.tls.caSecret }}
    items:
      - key: {{ .root.Values.redis.tls.caSecretKey }}
        path: {{ .root.Values.redis.tls.caSecretKey }}
{{- end }}
{{- if and .root.Values.tls.enabled (eq .role "frontend") }}
{{- if not .root.Values.tls.existingSecret }}
{{- fail "tls.enabled needs tls.existingSecret: a kubernetes.io/tls Secret with tls.crt and tls.key" }}
{{- end }}
- name: tls
  secret:
    secretName: {{ .root.Values.tls.existingSecret }}
{{- end }}
{{- $wt := .root.Values.workerTls -}}
{{- if and $wt.enabled (or (has .role (list "frontend" "worker")) (and (eq .role "controller") .root.Values.controller.autoscaling.enabled)) }}
{{- if not $wt.existingSecret }}
{{- fail "workerTls.enabled needs workerTls.existingSecret: a kubernetes.io/tls Secret with tls.crt, tls.key and the CA" }}
{{- end }}
- name: worker-tls
  secret:
    secretName: {{ $wt.existingSecret }}
    {{- if ne .role "worker" }}
    # Frontends (and the controller) verify workers: the CA only, never the workers' key.
    items:
      - key: {{ $wt.caKey }}
        path: {{ $wt.caKey }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* The worker API's TLS flags: workers serve (and their preStop drain verifies), frontends
verify. (dict "root" $ "role" "worker") */}}
{{- define "remotemedia.workerTlsEnv" -}}
{{- $wt := .root.Values.workerTls -}}
{{- if $wt.enabled }}
{{- $dir := include "remotemedia.workerTlsDir" .root }}
{{- if eq .role "worker" }}
- name: REMOTEMEDIA_WORKER_TLS_CERT
  value: {{ printf "%s/tls.crt" $dir | quote }}
- name: REMOTEMEDIA_WORKER_TLS_KEY
  value: {{ printf "%s/tls.key" $dir | quote }}
- name: REMOTEMEDIA_TLS_RELOAD_INTERVAL
  value: {{ .root.Values.tls.reloadInterval | quote }}
{{- end }}
- name: REMOTEMEDIA_WORKER_CA
  value: {{ printf "%s/%s" $dir $wt.caKey | quote }}
- name: REMOTEMEDIA_WORKER_TLS_NAME
  value: {{ default (printf "%s.%s.svc" (include "remotemedia.workerName" .root) .root.Release.Namespace) $wt.serverName | quote }}
{{- end }}
{{- end -}}

{{/* The frontends' TLS flags. */}}
{{- define "remotemedia.tlsEnv" -}}
{{- if .Values.tls.enabled }}
- name: REMOTEMEDIA_TLS_CERT
  value: {{ printf "%s/tls.crt" (include "remotemedia.tlsDir" .) | quote }}
- name: REMOTEMEDIA_TLS_KEY
  value: {{ printf "%s/tls.key" (include "remotemedia.tlsDir" .) | quote }}
- name: REMOTEMEDIA_TLS_RELOAD_INTERVAL
  value: {{ .Values.tls.reloadInterval | quote }}
{{- end }}
{{- end -}}
