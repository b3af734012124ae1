{{/* Names ------------------------------------------------------------------------------------------------ */}}

{{- define "auditseal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "auditseal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>", for the objects of one workload. Call with (list $ "sealer"). */}}
{{- define "auditseal.componentName" -}}
{{- printf "%s-%s" (include "auditseal.fullname" (index . 0)) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "auditseal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "auditseal.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------------------------------------- */}}

{{- define "auditseal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "auditseal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: auditseal
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Call with (list $ "sealer"). */}}
{{- define "auditseal.componentLabels" -}}
{{ include "auditseal.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Call with (list $ "sealer"). */}}
{{- define "auditseal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "auditseal.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Image ------------------------------------------------------------------------------------------------ */}}

{{- define "auditseal.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Credentials ------------------------------------------------------------------------------------------ */}}

{{/* The Secret holding a workload's credentials: rendered by the chart when a password is given in the
     values, else the existingSecret. Call with (list $ "sealer" .Values.sealer.credentials). */}}
{{- define "auditseal.credentialsSecret" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $credentials := index . 2 -}}
{{- if $credentials.password -}}
{{- include "auditseal.componentName" (list $root $component) -}}
{{- else if $credentials.existingSecret -}}
{{- $credentials.existingSecret -}}
{{- else -}}
{{- fail (printf "%s.credentials: set password (and the S3 keys where used) or existingSecret" $component) -}}
{{- end -}}
{{- end -}}

{{/* Ports of a "host:port[,host:port...]" bootstrap list, for the egress rules. */}}
{{- define "auditseal.kafkaPorts" -}}
{{- $ports := list -}}
{{- range $address := splitList "," .Values.kafka.bootstrap -}}
{{- $port := last (splitList ":" (trim $address)) -}}
{{- if not (regexMatch "^[0-9]+$" $port) -}}
{{- fail (printf "kafka.bootstrap: %q has no port; expected host:port[,host:port...]" $address) -}}
{{- end -}}
{{- $ports = append $ports (int $port) -}}
{{- end -}}
{{- range .Values.networkPolicy.kafka.extraPorts -}}
{{- $ports = append $ports (int .) -}}
{{- end -}}
{{- toJson (uniq $ports) -}}
{{- end -}}

{{/* The port of s3.endpoint (https only). */}}
{{- define "auditseal.s3Port" -}}
{{- $url := urlParse .Values.s3.endpoint -}}
{{- if ne $url.scheme "https" -}}
{{- fail (printf "s3.endpoint: %q must be an https:// URL (TLS everywhere)" .Values.s3.endpoint) -}}
{{- end -}}
{{- $hostPort := splitList ":" $url.host -}}
{{- if gt (len $hostPort) 1 -}}{{ last $hostPort }}{{- else -}}443{{- end -}}
{{- end -}}

{{/* Pod pieces ------------------------------------------------------------------------------------------- */}}

{{/* The connection environment of one role. Call with (dict "root" $ "component" "sink" "credentials" ...
     "s3" true). */}}
{{- define "auditseal.env" -}}
{{- $root := .root -}}
{{- $secret := include "auditseal.credentialsSecret" (list $root .component .credentials) -}}
- name: AUDITSEAL_BOOTSTRAP
  value: {{ $root.Values.kafka.bootstrap | quote }}
- name: AUDITSEAL_SASL_USERNAME
  value: {{ .credentials.username | quote }}
- name: AUDITSEAL_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: sasl-password
- name: AUDITSEAL_CA_FILE
  value: /etc/auditseal/ca/{{ $root.Values.tls.ca.key }}
- name: AUDITSEAL_KEYRING
  value: /etc/auditseal/keyring/{{ $root.Values.keyring.key }}
- name: AUDITSEAL_BUCKET
  value: {{ $root.Values.s3.bucket | quote }}
{{- /* metrics endpoints listen on the pod IP for the ServiceMonitor; the NetworkPolicy limits who scrapes */}}
- name: AUDITSEAL_METRICS_ADDR
  value: "0.0.0.0"
{{- if .s3 }}
- name: AWS_ENDPOINT_URL
  value: {{ $root.Values.s3.endpoint | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: aws-access-key-id
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: aws-secret-access-key
- name: AWS_CA_BUNDLE
  value: {{ if $root.Values.s3.useSystemCAs }}/etc/ssl/certs/ca-certificates.crt{{ else }}/etc/auditseal/ca/{{ $root.Values.tls.ca.key }}{{ end }}
{{- end }}
{{- end -}}

{{/* Volume mounts every container has: CA, keyring, scratch. */}}
{{- define "auditseal.volumeMounts" -}}
- name: ca
  mountPath: /etc/auditseal/ca
  readOnly: true
- name: keyring
  mountPath: /etc/auditseal/keyring
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: work
  mountPath: /var/lib/auditseal
{{- end -}}

{{/* The volumes behind auditseal.volumeMounts. */}}
{{- define "auditseal.volumes" -}}
- name: ca
  configMap:
    name: {{ if .Values.tls.ca.pem }}{{ include "auditseal.componentName" (list . "ca") }}{{ else }}{{ required "tls.ca: set pem or existingConfigMap" .Values.tls.ca.existingConfigMap }}{{ end }}
    items:
      - key: {{ .Values.tls.ca.key }}
        path: {{ .Values.tls.ca.key }}
- name: keyring
  configMap:
    name: {{ if .Values.keyring.json }}{{ include "auditseal.componentName" (list . "keyring") }}{{ else }}{{ required "keyring: set json or existingConfigMap" .Values.keyring.existingConfigMap }}{{ end }}
    items:
      - key: {{ .Values.keyring.key }}
        path: {{ .Values.keyring.key }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratchSizeLimit }}
- name: work
  emptyDir:
    sizeLimit: {{ .Values.scratchSizeLimit }}
{{- end -}}

{{/* Pod-level fields shared by every workload. */}}
{{- define "auditseal.podCommon" -}}
serviceAccountName: {{ include "auditseal.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
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
{{- end -}}

{{/* Pod template annotations: roll the pods when the chart-rendered configuration changes. */}}
{{- define "auditseal.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/config.yaml") . | sha256sum }}
checksum/secrets: {{ include (print .Template.BasePath "/secrets.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A private key file from a Secret, made owner-only for the non-root user. Secret volumes are
     group-readable once fsGroup is set, and the sealer and the sink refuse a key file that is not
     owner-only, so an init container copies the key into memory-backed storage with mode 0400.
     Call with (dict "root" $ "name" "signing-key" "secret" "<secret name>" "key" "<key in the secret>");
     the key is then at /run/auditseal/<name>/<name>.pem, from the volumes of auditseal.privateKeyVolumes. */}}
{{- define "auditseal.privateKeyInit" -}}
- name: {{ .name }}
  image: {{ include "auditseal.image" .root }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command: ["install", "-m", "0400", "/etc/auditseal/{{ .name }}-secret/{{ .key }}", "/run/auditseal/{{ .name }}/{{ .name }}.pem"]
  securityContext:
    {{- toYaml .root.Values.containerSecurityContext | nindent 4 }}
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {cpu: 100m, memory: 64Mi}
  volumeMounts:
    - name: {{ .name }}-secret
      mountPath: /etc/auditseal/{{ .name }}-secret
      readOnly: true
    - name: {{ .name }}
      mountPath: /run/auditseal/{{ .name }}
{{- end -}}

{{- define "auditseal.privateKeyMount" -}}
- name: {{ .name }}
  mountPath: /run/auditseal/{{ .name }}
  readOnly: true
{{- end -}}

{{- define "auditseal.privateKeyVolumes" -}}
- name: {{ .name }}-secret
  secret:
    secretName: {{ .secret }}
    defaultMode: 0400
    items:
      - key: {{ .key }}
        path: {{ .key }}
- name: {{ .name }}
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end -}}

{{/* The sealers' witness policy: "" (no witnessing), or the volume source holding it (one of sealer.witness's
     policy, existingConfigMap, existingSecret; more than one is refused). */}}
{{- define "auditseal.witnessPolicySource" -}}
{{- $w := .Values.sealer.witness -}}
{{- $given := 0 -}}
{{- range (list $w.policy $w.existingConfigMap $w.existingSecret) }}{{ if . }}{{ $given = add1 $given }}{{ end }}{{ end -}}
{{- if gt $given 1 -}}
{{- fail "sealer.witness: set one of policy, existingConfigMap or existingSecret, not several" -}}
{{- end -}}
{{- if $w.policy -}}
configMap:
  name: {{ include "auditseal.componentName" (list . "witness-policy") }}
  items:
    - key: {{ $w.key }}
      path: {{ $w.key }}
{{- else if $w.existingConfigMap -}}
configMap:
  name: {{ $w.existingConfigMap }}
  items:
    - key: {{ $w.key }}
      path: {{ $w.key }}
{{- else if $w.existingSecret -}}
secret:
  secretName: {{ $w.existingSecret }}
  items:
    - key: {{ $w.key }}
      path: {{ $w.key }}
{{- end -}}
{{- end -}}
