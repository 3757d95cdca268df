{{- define "loom-redis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "loom-redis.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "loom-redis.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "loom-redis.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "loom-redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "loom-redis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "loom-redis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "loom-redis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "loom-redis.workerSelectorLabels" -}}
{{ include "loom-redis.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "loom-redis.webSelectorLabels" -}}
{{ include "loom-redis.selectorLabels" . }}
app.kubernetes.io/component: web
{{- end -}}

{{/* The dashboard's token, from the chart's Secret or the user's. */}}
{{- define "loom-redis.webTokenEnv" -}}
{{- $web := .Values.web -}}
{{- if or $web.token $web.existingTokenSecret.name }}
- name: LOOM_WEB_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $web.existingTokenSecret.name | default (printf "%s-web" (include "loom-redis.fullname" .)) }}
      key: {{ ternary $web.existingTokenSecret.key "token" (not (empty $web.existingTokenSecret.name)) }}
{{- end }}
{{- end -}}

{{- define "loom-redis.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "loom-redis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "loom-redis.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Hooks run before the release's own ServiceAccount exists on a first install. */}}
{{- define "loom-redis.hookServiceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
default
{{- else -}}
{{- include "loom-redis.serviceAccountName" . -}}
{{- end -}}
{{- end -}}

{{/* The Secret with the Redis URL: the user's, or the one the chart makes. The hook
Job reads a copy made as a hook itself, since on a first install it runs before the
release's own resources exist. */}}
{{- define "loom-redis.redisSecretName" -}}
{{- $root := index . 0 -}}
{{- $hook := index . 1 -}}
{{- if $root.Values.redis.existingSecret.name -}}
{{- $root.Values.redis.existingSecret.name -}}
{{- else if $hook -}}
{{- include "loom-redis.fullname" $root }}-redis-hook
{{- else -}}
{{- include "loom-redis.fullname" $root }}-redis
{{- end -}}
{{- end -}}

{{- define "loom-redis.redisKey" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- if $root.Values.redis.existingSecret.name -}}
{{- index $root.Values.redis.existingSecret (printf "%sKey" $key) -}}
{{- else -}}
{{- $key -}}
{{- end -}}
{{- end -}}

{{/* The TLS files' paths, as the query parameters redis-py takes (docs/security.md). */}}
{{- define "loom-redis.tlsQuery" -}}
{{- $tls := .Values.redis.tls -}}
{{- $params := list -}}
{{- if $tls.caKey }}{{ $params = append $params (printf "ssl_ca_certs=%s/ca.crt" $tls.mountPath) }}{{ end -}}
{{- if $tls.certKey }}{{ $params = append $params (printf "ssl_certfile=%s/tls.crt" $tls.mountPath) }}{{ end -}}
{{- if $tls.keyKey }}{{ $params = append $params (printf "ssl_keyfile=%s/tls.key" $tls.mountPath) }}{{ end -}}
{{- join "&" $params -}}
{{- end -}}

{{/* "true" when the Redis URL names a Redis Cluster (see redis.cluster), else "". */}}
{{- define "loom-redis.cluster" -}}
{{- if or .Values.redis.cluster (contains "+cluster://" .Values.redis.url) }}true{{ end -}}
{{- end -}}

{{- define "loom-redis.checkValues" -}}
{{- if and (not .Values.redis.url) (not .Values.redis.existingSecret.name) -}}
{{- fail "redis: set redis.url (the chart makes a Secret of it) or redis.existingSecret.name (a Secret holding the URL under redis.existingSecret.urlKey)" -}}
{{- end -}}
{{- if and .Values.redis.url .Values.redis.existingSecret.name -}}
{{- fail "redis: set redis.url or redis.existingSecret.name, not both" -}}
{{- end -}}
{{- $web := .Values.web -}}
{{- if and $web.enabled (not $web.token) (not $web.existingTokenSecret.name) (not $web.insecure) -}}
{{- fail "web.enabled: set web.token (the chart makes a Secret of it) or web.existingTokenSecret.name, which signal, cancel and retry will need; or web.insecure: true to let anyone who reaches the dashboard act" -}}
{{- end -}}
{{- if and $web.token $web.existingTokenSecret.name -}}
{{- fail "web: set web.token or web.existingTokenSecret.name, not both" -}}
{{- end -}}
{{- if .Values.redis.tls.enabled -}}
{{- if not .Values.redis.tls.secretName -}}
{{- fail "redis.tls.enabled: set redis.tls.secretName, the Secret with the CA, client certificate and key" -}}
{{- end -}}
{{- if .Values.redis.url -}}
{{- if not (or (hasPrefix "rediss://" .Values.redis.url) (hasPrefix "rediss+cluster://" .Values.redis.url)) -}}
{{- fail "redis.tls.enabled: redis.url must be a rediss:// (or rediss+cluster://) URL" -}}
{{- end -}}
{{- if and (contains "?" .Values.redis.url) (include "loom-redis.tlsQuery" .) -}}
{{- fail "redis.tls.enabled: redis.url must have no query string: the chart appends ssl_ca_certs, ssl_certfile and ssl_keyfile to it" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Everything a container needs to reach Redis: shared by the workers, the hook Job,
the dashboard and the test pod. Called with (list $ hook [extraEnv [ownSecret]]): the
URL comes from ownSecret ({name, urlKey}) when it names one. */}}
{{- define "loom-redis.connectionEnv" -}}
{{- $root := index . 0 -}}
{{- $secret := include "loom-redis.redisSecretName" . -}}
{{- $urlKey := include "loom-redis.redisKey" (list $root "url") -}}
{{- if gt (len .) 3 -}}
{{- with index . 3 -}}
{{- if .name -}}
{{- $secret = .name -}}
{{- $urlKey = .urlKey -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $query := ternary (include "loom-redis.tlsQuery" $root) "" $root.Values.redis.tls.enabled -}}
{{- if $query }}
- name: LOOM_REDIS_BASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $urlKey }}
- name: LOOM_REDIS_URL
  value: {{ printf "$(LOOM_REDIS_BASE_URL)?%s" $query | quote }}
{{- else }}
- name: LOOM_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $urlKey }}
{{- end }}
- name: LOOM_NAMESPACE
  value: {{ $root.Values.loom.namespace | quote }}
- name: LOOM_DURABILITY
  value: {{ $root.Values.loom.durability | quote }}
- name: LOOM_WAIT_FOR_REDIS
  value: {{ $root.Values.redis.waitSeconds | quote }}
- name: LOOM_LOG_FORMAT
  value: {{ $root.Values.worker.logFormat | quote }}
{{- with $root.Values.worker.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "loom-redis.connectionVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.redis.tls.enabled }}
- name: redis-tls
  mountPath: {{ .Values.redis.tls.mountPath }}
  readOnly: true
{{- end }}
{{- with .Values.worker.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "loom-redis.connectionVolumes" -}}
- name: tmp
  emptyDir: {}
{{- $tls := .Values.redis.tls }}
{{- if $tls.enabled }}
- name: redis-tls
  secret:
    secretName: {{ $tls.secretName }}
    defaultMode: 0440
    items:
      {{- if $tls.caKey }}
      - key: {{ $tls.caKey }}
        path: ca.crt
      {{- end }}
      {{- if $tls.certKey }}
      - key: {{ $tls.certKey }}
        path: tls.crt
      {{- end }}
      {{- if $tls.keyKey }}
      - key: {{ $tls.keyKey }}
        path: tls.key
      {{- end }}
{{- end }}
{{- with .Values.worker.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The pod spec fields every pod of the chart has (security, scheduling, pull
secrets, volumes). Called with (list $ hook). */}}
{{- define "loom-redis.podCommon" -}}
{{- $root := index . 0 -}}
{{- $hook := index . 1 -}}
serviceAccountName: {{ ternary (include "loom-redis.hookServiceAccountName" $root) (include "loom-redis.serviceAccountName" $root) $hook }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
securityContext:
  {{- toYaml $root.Values.worker.podSecurityContext | nindent 2 }}
{{- with $root.Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with $root.Values.worker.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.worker.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.worker.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.worker.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
volumes:
  {{- include "loom-redis.connectionVolumes" $root | nindent 2 }}
{{- end -}}

{{/* A `loom` container's image, security context, environment and mounts; the caller
adds name, args and the rest. Called with (list $ hook), or (list $ hook moreEnv) where
moreEnv is YAML of more variables. */}}
{{- define "loom-redis.containerCommon" -}}
{{- $root := index . 0 -}}
image: {{ include "loom-redis.image" $root }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml $root.Values.worker.securityContext | nindent 2 }}
env:
  {{- include "loom-redis.connectionEnv" . | trim | nindent 2 }}
  {{- if gt (len .) 2 }}
  {{- index . 2 | trim | nindent 2 }}
  {{- end }}
volumeMounts:
  {{- include "loom-redis.connectionVolumeMounts" $root | nindent 2 }}
{{- end -}}

{{- define "loom-redis.metricsSelector" -}}
{{- .Values.metrics.selector | default (printf "job=%q" (printf "%s/%s" .Release.Namespace (include "loom-redis.fullname" .))) -}}
{{- end -}}

{{- define "loom-redis.queueRegex" -}}
{{- $quoted := list -}}
{{- range .Values.loom.queues }}{{ $quoted = append $quoted (regexQuoteMeta .) }}{{ end -}}
{{- join "|" $quoted -}}
{{- end -}}

{{- define "loom-redis.targetTasksPerPod" -}}
{{- .Values.autoscaling.keda.targetTasksPerPod | default .Values.worker.concurrency -}}
{{- end -}}
