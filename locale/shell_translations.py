"""Fills the UI shell's strings into locale/*/django.po (run after makemessages, then
compilemessages). Feature strings are translated in the .po files directly; this table keeps
the shell consistent across de/fr/it. Usage: python locale/shell_translations.py"""

from __future__ import annotations

import re
from pathlib import Path

T = {
    "Charging portal": ("Ladeportal", "Portail de recharge", "Portale di ricarica"),
    "Organizations": ("Organisationen", "Organisations", "Organizzazioni"),
    "New organization": ("Neue Organisation", "Nouvelle organisation", "Nuova organizzazione"),
    "Dashboard": ("Übersicht", "Tableau de bord", "Panoramica"),
    "Stations": ("Stationen", "Bornes", "Stazioni"),
    "Members": ("Mitglieder", "Membres", "Membri"),
    "Settings": ("Einstellungen", "Paramètres", "Impostazioni"),
    "My charging": ("Mein Laden", "Ma recharge", "La mia ricarica"),
    "Platform admin": (
        "Plattform-Admin",
        "Admin plateforme",
        "Admin piattaforma",
    ),
    "My account": ("Mein Konto", "Mon compte", "Il mio account"),
    "Log out": ("Abmelden", "Se déconnecter", "Esci"),
    "Log in": ("Anmelden", "Se connecter", "Accedi"),
    "Sign up": ("Registrieren", "S'inscrire", "Registrati"),
    "Language": ("Sprache", "Langue", "Lingua"),
    "Go": ("Los", "Aller", "Vai"),
    "Live updates": ("Live-Aktualisierung", "Mises à jour en direct", "Aggiornamenti in diretta"),
    "Open-source charging portal": (
        "Open-Source-Ladeportal",
        "Portail de recharge libre",
        "Portale di ricarica open source",
    ),
    "Team": ("Team", "Équipe", "Team"),
    "Manage members": ("Mitglieder verwalten", "Gérer les membres", "Gestisci i membri"),
    "Your account name": ("Ihr Kontoname", "Votre nom de compte", "Il tuo nome account"),
    "E-mail addresses": ("E-Mail-Adressen", "Adresses e-mail", "Indirizzi e-mail"),
    "Change password": ("Passwort ändern", "Changer le mot de passe", "Cambia password"),
    "You do not run stations yet.": (
        "Sie betreiben noch keine Stationen.",
        "Vous n'exploitez pas encore de bornes.",
        "Non gestisci ancora stazioni.",
    ),
    "API token": ("API-Token", "Jeton d'API", "Token API"),
    "API documentation": ("API-Dokumentation", "Documentation de l'API", "Documentazione API"),
    "Replace token": ("Token ersetzen", "Remplacer le jeton", "Sostituisci token"),
    "Create token": ("Token erstellen", "Créer un jeton", "Crea token"),
    "Revoke": ("Widerrufen", "Révoquer", "Revoca"),
    "Invitation": ("Einladung", "Invitation", "Invito"),
    "Accept invitation": ("Einladung annehmen", "Accepter l'invitation", "Accetta invito"),
    "E-mail": ("E-Mail", "E-mail", "E-mail"),
    "E-mail address": ("E-Mail-Adresse", "Adresse e-mail", "Indirizzo e-mail"),
    "you": ("Sie", "vous", "tu"),
    "Change": ("Ändern", "Modifier", "Modifica"),
    "Remove this member?": (
        "Dieses Mitglied entfernen?",
        "Retirer ce membre ?",
        "Rimuovere questo membro?",
    ),
    "Remove": ("Entfernen", "Retirer", "Rimuovi"),
    "Open invitations": ("Offene Einladungen", "Invitations en attente", "Inviti aperti"),
    "Expires": ("Läuft ab", "Expire", "Scade"),
    "Invite by e-mail": ("Per E-Mail einladen", "Inviter par e-mail", "Invita via e-mail"),
    "Send invitation": ("Einladung senden", "Envoyer l'invitation", "Invia invito"),
    "Add by account name": (
        "Per Kontoname hinzufügen",
        "Ajouter par nom de compte",
        "Aggiungi per nome account",
    ),
    "Add member": ("Mitglied hinzufügen", "Ajouter le membre", "Aggiungi membro"),
    "Only owners can change members.": (
        "Nur Inhaber können Mitglieder ändern.",
        "Seuls les propriétaires peuvent modifier les membres.",
        "Solo i proprietari possono modificare i membri.",
    ),
    "Create": ("Erstellen", "Créer", "Crea"),
    "Organization settings": (
        "Einstellungen der Organisation",
        "Paramètres de l'organisation",
        "Impostazioni dell'organizzazione",
    ),
    "Save": ("Speichern", "Enregistrer", "Salva"),
    "Delete organization": (
        "Organisation löschen",
        "Supprimer l'organisation",
        "Elimina organizzazione",
    ),
    "Delete for good": ("Endgültig löschen", "Supprimer définitivement", "Elimina definitivamente"),
    "Name": ("Name", "Nom", "Nome"),
    "Role": ("Rolle", "Rôle", "Ruolo"),
    "Account name": ("Kontoname", "Nom de compte", "Nome account"),
    "Owner": ("Inhaber", "Propriétaire", "Proprietario"),
    "Manager": ("Verwalter", "Gestionnaire", "Gestore"),
    "Viewer": ("Betrachter", "Lecteur", "Osservatore"),
    "English": ("Englisch", "Anglais", "Inglese"),
    "German": ("Deutsch", "Allemand", "Tedesco"),
    "French": ("Französisch", "Français", "Francese"),
    "Italian": ("Italienisch", "Italien", "Italiano"),
    "Saved.": ("Gespeichert.", "Enregistré.", "Salvato."),
    "Invitation sent.": ("Einladung gesendet.", "Invitation envoyée.", "Invito inviato."),
    "Member added.": ("Mitglied hinzugefügt.", "Membre ajouté.", "Membro aggiunto."),
    "Member removed.": ("Mitglied entfernt.", "Membre retiré.", "Membro rimosso."),
    "Role changed.": ("Rolle geändert.", "Rôle modifié.", "Ruolo modificato."),
    "Organization created.": (
        "Organisation erstellt.",
        "Organisation créée.",
        "Organizzazione creata.",
    ),
    "An organization needs at least one owner.": (
        "Eine Organisation braucht mindestens einen Inhaber.",
        "Une organisation doit avoir au moins un propriétaire.",
        "Un'organizzazione ha bisogno di almeno un proprietario.",
    ),
    "No user has this account name.": (
        "Kein Benutzer hat diesen Kontonamen.",
        "Aucun utilisateur n'a ce nom de compte.",
        "Nessun utente ha questo nome account.",
    ),
}

LANGS = ("de", "fr", "it")


def fill(po: Path, index: int) -> int:
    text = po.read_text(encoding="utf-8")
    filled = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal filled
        msgid = match.group(1)
        if msgid in T and not match.group(2):
            filled += 1
            value = T[msgid][index].replace('"', '\\"')
            return f'msgid "{msgid}"\nmsgstr "{value}"'
        return match.group(0)

    text = re.sub(
        r'^msgid "((?:[^"\\]|\\.)+)"\nmsgstr "((?:[^"\\]|\\.)*)"', replace, text, flags=re.M
    )
    po.write_text(text, encoding="utf-8")
    return filled


if __name__ == "__main__":
    root = Path(__file__).resolve().parent
    for i, lang in enumerate(LANGS):
        print(lang, fill(root / lang / "LC_MESSAGES" / "django.po", i))
