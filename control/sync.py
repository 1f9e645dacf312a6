"""Model -> data plane: turns a validated Config into the frozen specs that data planes
diff and apply (lbfast never sees the model itself)."""
from control.config import frontend_protocol
from control.model import Backend, Config, HealthCheck, LoadBalancer
from lbfast.spec import (TABLE_STICKY_TIMEOUT_MS, AccessLogSpec, BackendSpec, CertificateSpec, FrontendSpec,
                         HealthCheckSpec, ServerSpec)


def health_spec(hc: HealthCheck) -> HealthCheckSpec:
    return HealthCheckSpec(
        type=hc.type, port=hc.port, interval_ms=hc.interval_ms, timeout_ms=hc.timeout_ms,
        fall=hc.attempts, rise=hc.rise, http_method=hc.http_method, http_uri=hc.http_uri,
        http_code=hc.http_code, http_host=hc.http_host, http_body=hc.http_body, sni=hc.sni,
        verify_tls=hc.verify_tls, user=hc.user, send_proxy=hc.send_proxy, passive=hc.passive)


def backend_spec(b: Backend) -> BackendSpec:
    servers = tuple(
        ServerSpec(id=s.id, address=s.address, port=s.port or b.forward_port, weight=s.weight,
                   mode=s.mode, label=s.label)
        for s in b.servers)
    return BackendSpec(
        id=b.id, uuid=b.uuid, name=b.name, protocol=b.protocol, algorithm=b.algorithm,
        stickiness=b.stickiness, sticky_cookie_name=b.sticky_cookie_name,
        sticky_timeout_ms=b.sticky_timeout_ms or TABLE_STICKY_TIMEOUT_MS,
        cookie_max_age_s=-(-b.sticky_timeout_ms // 1000) if b.sticky_timeout_ms else None,
        proxy_protocol=b.proxy_protocol,
        timeout_server_ms=b.timeout_server_ms, timeout_connect_ms=b.timeout_connect_ms,
        timeout_tunnel_ms=b.timeout_tunnel_ms, udp_session_timeout_ms=b.udp_session_timeout_ms,
        on_marked_down=b.on_marked_down_action, retries=b.retries, max_connections=b.max_connections,
        timeout_queue_ms=b.timeout_queue_ms or b.timeout_connect_ms,
        health_check=health_spec(b.health_check), servers=servers)


def lb_frontend_specs(lb: LoadBalancer, access_log: AccessLogSpec | None = None) -> list[FrontendSpec]:
    backends = {b.name: backend_spec(b) for b in lb.backends}
    certs = {c.name: CertificateSpec(id=c.id, name=c.name, chain_pem=c.chain_pem, key_pem=c.key_pem)
             for c in lb.certificates}
    return [
        FrontendSpec(
            id=f.id, uuid=f.uuid, name=f.name, lb_id=lb.id, address=lb.vip, port=f.port,
            protocol=frontend_protocol(lb, f), backend=backends[f.backend],
            timeout_client_ms=f.timeout_client_ms, client_conn_throttle=lb.client_conn_throttle,
            certificates=tuple(certs[n] for n in f.certificates), cipher_suite=f.cipher_suite,
            access_log=access_log if f.access_log else None)
        for f in lb.frontends]


def frontend_specs(config: Config) -> list[FrontendSpec]:
    access_log = AccessLogSpec(config.access_log.path, config.access_log.format)
    return [spec for lb in config.lbs for spec in lb_frontend_specs(lb, access_log)]


def backend_specs(config: Config) -> list[BackendSpec]:
    return [backend_spec(b) for lb in config.lbs for b in lb.backends]
