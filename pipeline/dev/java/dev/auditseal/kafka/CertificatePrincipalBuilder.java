package dev.auditseal.kafka;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.kafka.common.Configurable;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.security.auth.AuthenticationContext;
import org.apache.kafka.common.security.auth.KafkaPrincipal;
import org.apache.kafka.common.security.auth.KafkaPrincipalBuilder;
import org.apache.kafka.common.security.auth.KafkaPrincipalSerde;
import org.apache.kafka.common.security.auth.SslAuthenticationContext;
import org.apache.kafka.common.security.authenticator.DefaultKafkaPrincipalBuilder;
import org.apache.kafka.common.security.ssl.SslPrincipalMapper;

/**
 * Principals for AuditSeal's brokers: a TLS client certificate yields {@code Cert:<name>}, a SASL login
 * {@code User:<name>}, so no SCRAM credential, whatever its name, can ever produce a certificate principal.
 *
 * <p>The broker refuses to start unless every entry of {@code super.users} is a {@code Cert:} principal:
 * with this builder installed (visible to the admin API as {@code principal.builder.class}), a super user
 * is reachable only with a certificate from the cluster's CA, never by setting a password.
 */
public final class CertificatePrincipalBuilder implements KafkaPrincipalBuilder, KafkaPrincipalSerde, Configurable {
    public static final String CERTIFICATE_TYPE = "Cert";

    private DefaultKafkaPrincipalBuilder delegate =
        new DefaultKafkaPrincipalBuilder(null, SslPrincipalMapper.fromRules("DEFAULT"));

    @Override
    public void configure(Map<String, ?> configs) {
        Object rules = configs.get("ssl.principal.mapping.rules");
        delegate = new DefaultKafkaPrincipalBuilder(null,
            SslPrincipalMapper.fromRules(rules == null ? "DEFAULT" : rules.toString()));
        Object superUsers = configs.get("super.users");
        List<String> wrong = new ArrayList<>();
        if (superUsers != null) {
            for (String entry : superUsers.toString().split(";")) {
                String principal = entry.trim();
                if (!principal.isEmpty() && !principal.startsWith(CERTIFICATE_TYPE + ":")) {
                    wrong.add(principal);
                }
            }
        }
        if (!wrong.isEmpty()) {
            throw new ConfigException("super.users", String.join(";", wrong),
                "every super user must be a certificate principal (" + CERTIFICATE_TYPE + ":<name>): a "
                + "User: super user could be taken over by anyone allowed to set a SCRAM password");
        }
    }

    @Override
    public KafkaPrincipal build(AuthenticationContext context) {
        KafkaPrincipal principal = delegate.build(context);
        if (context instanceof SslAuthenticationContext && !KafkaPrincipal.ANONYMOUS.equals(principal)) {
            return new KafkaPrincipal(CERTIFICATE_TYPE, principal.getName(), principal.tokenAuthenticated());
        }
        return principal;
    }

    @Override
    public byte[] serialize(KafkaPrincipal principal) throws SerializationException {
        return delegate.serialize(principal);
    }

    @Override
    public KafkaPrincipal deserialize(byte[] bytes) throws SerializationException {
        return delegate.deserialize(bytes);
    }
}
